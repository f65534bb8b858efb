"""The rolling safety net: every in-scope room swept at least once per SAFETY_SYNC_MAX_AGE_SECONDS.

Google drops a small share of pushes, so each room gets an incremental sync now and then even
when no push came. Sweeping every room at once (the first design) spends the whole call budget
in a burst: 10,000 rooms is 10,000 events.list calls in the first minute, when Google allows
600. Instead the planner (jobs/sync.py: `plan_safety_net`, every SAFETY_SYNC_INTERVAL_SECONDS)
picks, at each tick, the fewest rooms that still keeps every room within its age:

- each room's deadline is its last successful sync plus SAFETY_SYNC_MAX_AGE_SECONDS (a room
  never synced, e.g. just added, is due now);
- sorted by deadline, the j-th room must be swept within k_j ticks, so the tick must take at
  least ``max_j ceil(j / k_j)`` rooms (the slowest steady pace that meets every deadline),
  stalest first; a room synced by a push meanwhile moves its deadline back and drops out;
- a room synced within the last tick is never swept (a push just covered it);
- and never more than the budget leaves to sweeps: GOOGLE_CALLS_PER_MINUTE less what writes,
  push syncs and renewals took in the busiest of the last minutes, less their reserve.

When the budget cannot cover every room within the age, the plan says so with its numbers
("10,000 rooms need 667 sweep calls a minute; the budget leaves 300"), for the admin console
and `flask --app wsgi google usage`, instead of silently falling behind.

The plan is kept in Redis (``roombridge:sweep:plan``) for those readers. Sweep jobs run on
their own queue, after writes and push syncs, with the budget's ``sweep`` kind; the jobs of one
tick are spread over the tick, and a sweep the budget refuses is simply dropped: the room stays
the stalest and the next tick picks it again.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from redis import Redis
from sqlalchemy.orm import Session

from roombridge.call_budget import Usage
from roombridge.config import Config
from roombridge.models import Room, RoomSyncState

PLAN_KEY = "roombridge:sweep:plan"
PLAN_TTL_SECONDS = 24 * 3600
PLANNED_KEY_PREFIX = "roombridge:sweep:planned:"  # + room id: swept by a tick's plan not yet a tick ago
# The minutes of use by other kinds the planner looks back on (the busiest counts).
LOOKBACK_MINUTES = 3


@dataclass(frozen=True)
class SweepPlan:
    """One tick of the rolling safety net, and whether the budget keeps up."""

    at: float  # epoch seconds
    rooms: int  # in scope
    max_age_seconds: int
    tick_seconds: float
    needed_per_minute: float  # sweep calls a minute every room needs to be swept within the age
    left_per_minute: float  # what the budget leaves to sweeps
    pace_per_tick: int  # the rooms this tick must take to meet every deadline
    cycle_seconds: float | None  # the stalest synced room's time since its last sync: the sweep's cycle
    never_synced: int
    overdue: int  # rooms already past the age
    room_ids: list[int] = field(default_factory=list)  # what this tick sweeps, stalest first

    @property
    def covered(self) -> bool:
        return self.needed_per_minute <= self.left_per_minute

    @property
    def shortfall(self) -> str | None:
        """What the admin reads when the budget cannot cover every room within the age; None when it can."""
        if self.covered:
            return None
        return (f"{self.rooms:,} rooms need {math.ceil(self.needed_per_minute):,} sweep calls a minute to be swept "
                f"every {_duration(self.max_age_seconds)}; the budget leaves {math.floor(self.left_per_minute):,}. "
                f"Rooms will go unswept longer than that: raise SAFETY_SYNC_MAX_AGE_SECONDS to at least "
                f"{_duration(self.rooms * 60 / max(self.left_per_minute, 1))}, or give part of the rooms to "
                f"another service account (README: past one user's quota).")

    def as_json(self) -> str:
        return json.dumps(asdict(self) | {"room_ids": len(self.room_ids)})


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    if seconds >= 3600 and seconds % 60 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{math.ceil(seconds / 60)} min"
    return f"{seconds} s"


def left_for_sweeps(usage: Usage, lookback: int = LOOKBACK_MINUTES) -> float:
    """Calls a minute the budget leaves to sweeps: the budget less the others' busiest recent minute and reserve."""
    recent = usage.minutes[-lookback:] or []
    others = max((m.granted["write"] + m.granted["sync"] + m.granted["renewal"] for m in recent), default=0)
    return max(0.0, float(usage.calls_per_minute - usage.reserves["sweep"] - others))


def pace(deadlines_in_ticks: list[float]) -> int:
    """The fewest rooms a tick must take so that each meets its deadline, given sorted deadlines in ticks from now.

    The j-th room (1-based) must be swept within the first k_j ticks, k_j = floor(deadline) + 1
    (at least 1: an overdue room goes now); taking the same number every tick, that number is at
    least ceil(j / k_j) for every j.
    """
    needed = 0
    for j, deadline in enumerate(deadlines_in_ticks, start=1):
        ticks = max(1, math.floor(deadline) + 1)
        needed = max(needed, -(-j // ticks))
    return needed


def plan(session: Session, config: Config, usage: Usage, now: datetime) -> SweepPlan:
    """The rooms this tick sweeps, stalest first, and the figures behind the choice."""
    max_age = float(config.SAFETY_SYNC_MAX_AGE_SECONDS)
    tick = float(config.SAFETY_SYNC_INTERVAL_SECONDS)
    rows = session.execute(
        sa.select(Room.id, RoomSyncState.last_sync_at)
        .outerjoin(RoomSyncState, RoomSyncState.room_id == Room.id)
        .where(Room.in_scope.is_(True))
        # Never synced first, then the stalest; the id keeps the order stable.
        .order_by(RoomSyncState.last_sync_at.is_not(None), RoomSyncState.last_sync_at, Room.id)
    ).all()
    deadlines = [0.0 if last is None else ((last - now).total_seconds() + max_age) / tick for _, last in rows]
    left = left_for_sweeps(usage)
    take = min(pace(deadlines), math.floor(left * tick / 60))
    recently = now - timedelta(seconds=tick)
    chosen = [room_id for room_id, last in rows if last is None or last < recently][:take]
    ages = [(now - last).total_seconds() for _, last in rows if last is not None]
    never = sum(1 for _, last in rows if last is None)
    return SweepPlan(
        at=now.timestamp(), rooms=len(rows), max_age_seconds=int(max_age), tick_seconds=tick,
        needed_per_minute=len(rows) * 60 / max_age, left_per_minute=left,
        pace_per_tick=pace(deadlines), cycle_seconds=max(ages, default=None),
        never_synced=never, overdue=sum(1 for d in deadlines if d < 0), room_ids=chosen,
    )


def claim(redis: Redis, sweep_plan: SweepPlan) -> list[int]:
    """The plan's rooms not already planned within the last tick (their sweep may still wait its turn)."""
    pipe = redis.pipeline(transaction=False)
    for room_id in sweep_plan.room_ids:
        pipe.set(f"{PLANNED_KEY_PREFIX}{room_id}", 1, nx=True, ex=max(1, math.ceil(sweep_plan.tick_seconds)))
    return [room_id for room_id, new in zip(sweep_plan.room_ids, pipe.execute(), strict=True) if new]


def keep(redis: Redis, sweep_plan: SweepPlan) -> None:
    """Keep the latest plan for the console and the CLI."""
    redis.set(PLAN_KEY, sweep_plan.as_json(), ex=PLAN_TTL_SECONDS)


def latest(redis: Redis) -> SweepPlan | None:
    """The latest plan kept (its room_ids left out), or None before the first tick."""
    raw = redis.get(PLAN_KEY)
    if raw is None:
        return None
    data = json.loads(raw)
    data["room_ids"] = []
    return SweepPlan(**data)

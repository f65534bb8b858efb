"""The rolling safety net (roombridge/sweep.py): the plan, its pace under the budget, the console's warning."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from roombridge import db, sweep
from roombridge.call_budget import COUNTS_KEY_PREFIX, CallBudget
from roombridge.config import Config
from roombridge.db import utcnow
from roombridge.gcal import call_budget
from roombridge.models import Room, RoomSyncState
from tests.webapp.signin import sign_in


def _rooms(session, ages: list[float | None], now) -> list[int]:
    """Rooms in scope, each last synced `age` seconds before `now` (None: never)."""
    ids = []
    for n, age in enumerate(ages):
        room = Room(calendar_id=f"sweep-{n:05d}@resource.calendar.google.com", name=f"S{n}", time_zone="UTC")
        session.add(room)
        session.flush()
        if age is not None:
            session.add(RoomSyncState(room_id=room.id, sync_count=1, last_sync_at=now - timedelta(seconds=age)))
        ids.append(room.id)
    session.commit()
    return ids


def _config(**settings) -> Config:
    settings = {"SAFETY_SYNC_INTERVAL_SECONDS": 60, "SAFETY_SYNC_MAX_AGE_SECONDS": 600, **settings}
    return Config.from_env(environ={"ENV": "development"}, **settings)


def test_pace_is_the_slowest_even_rate_that_meets_every_deadline():
    assert sweep.pace([]) == 0
    assert sweep.pace([9.5] * 10) == 1  # ten rooms, ten ticks to go: one a tick
    assert sweep.pace([0.0] * 5 + [9.5] * 10) == 5  # five overdue go now
    assert sweep.pace([-3.0, 0.5, 1.5, 2.5]) == 2  # two within the first tick
    assert sweep.pace([2.2, 2.4, 2.6, 2.8, 2.9, 2.95]) == 2  # six within three ticks


def test_plan_takes_the_stalest_first_skips_rooms_a_push_just_synced_and_keeps_the_pace(app):
    now = utcnow()
    with app.app_context():
        session = db.session()
        # Ten rooms: two never synced, one overdue, one synced 30 s ago by a push, the rest in between.
        ids = _rooms(session, [None, 700, 30, 550, 500, 450, 400, 350, None, 300], now)
        usage = call_budget(app).usage(minutes=3)
        plan = sweep.plan(session, _config(), usage, now)

    # Deadlines in ticks: never/overdue now (3 rooms), 550 s -> 0.8, 500 -> 1.7, ...: 4 within the first tick.
    assert plan.pace_per_tick == 4
    assert plan.room_ids == [ids[0], ids[8], ids[1], ids[3]]
    assert (plan.rooms, plan.never_synced, plan.overdue) == (10, 2, 1)
    assert plan.cycle_seconds == pytest.approx(700, abs=1)
    assert plan.needed_per_minute == 1.0 and plan.covered and plan.shortfall is None

    # A room synced within the last tick is never swept, whatever the pace.
    with app.app_context():
        plan = sweep.plan(db.session(), _config(SAFETY_SYNC_MAX_AGE_SECONDS=60), usage, now)
    assert ids[2] not in plan.room_ids and len(plan.room_ids) == 9


def test_the_sweep_takes_only_what_the_budget_leaves_and_says_by_how_much_it_falls_short(make_app):
    app = make_app(GOOGLE_CALLS_PER_MINUTE=40, SAFETY_SYNC_INTERVAL_SECONDS=60, SAFETY_SYNC_MAX_AGE_SECONDS=60)
    now = utcnow()
    budget = call_budget(app)
    # Bookings and push syncs took 10 calls this minute (as the budget's own counters record them).
    seconds, _ = budget.conn.time()
    budget.conn.hincrby(f"{COUNTS_KEY_PREFIX}{seconds // 60}", "write", 6)
    budget.conn.hincrby(f"{COUNTS_KEY_PREFIX}{seconds // 60}", "sync", 4)
    with app.app_context():
        session = db.session()
        _rooms(session, [None] * 50, now)
        plan = sweep.plan(session, app.config["ROOMBRIDGE"], budget.usage(minutes=3), now)
        sweep.keep(budget.conn, plan)

    # 40 a minute, less the 10 others took, less the reserve of writes and syncs (2 tokens): 28.
    assert plan.left_per_minute == 28
    assert len(plan.room_ids) == 28 and plan.pace_per_tick == 50
    assert not plan.covered
    assert plan.shortfall.startswith("50 rooms need 50 sweep calls a minute to be swept every 1 min; "
                                     "the budget leaves 28.")
    assert "SAFETY_SYNC_MAX_AGE_SECONDS to at least 2 min" in plan.shortfall

    # The admin console and `google usage` say so, with the numbers.
    client = app.test_client()
    sign_in(client, "admin@example.com")
    page = client.get("/admin/").get_data(as_text=True)
    assert "Safety net falls behind" in page and "50 rooms need 50 sweep calls a minute" in page
    assert "the budget leaves 28" in page
    usage_out = app.test_cli_runner().invoke(args=["google", "usage"]).output
    assert "FALLING BEHIND: 50 rooms need 50 sweep calls a minute" in usage_out


def test_plan_at_ten_thousand_rooms_names_the_shortfall_of_one_users_quota():
    # The arithmetic: 10,000 rooms swept every 15 minutes need 667 calls a minute.
    plan = sweep.SweepPlan(at=0, rooms=10_000, max_age_seconds=900, tick_seconds=60, needed_per_minute=10_000 / 15,
                           left_per_minute=300, pace_per_tick=667, cycle_seconds=None, never_synced=0, overdue=0)
    assert plan.shortfall.startswith("10,000 rooms need 667 sweep calls a minute to be swept every 15 min; "
                                     "the budget leaves 300.")
    assert "at least 34 min" in plan.shortfall


def test_left_for_sweeps_counts_the_busiest_recent_minute_of_the_other_kinds(redis_url):
    from redis import Redis

    budget = CallBudget(Redis.from_url(redis_url), 1000)
    usage = budget.usage(minutes=3)
    assert sweep.left_for_sweeps(usage) == 1000 - budget.reserves["sweep"]
    for kind in ("write", "sync", "renewal", "sweep"):
        assert budget.take(kind).granted
    assert sweep.left_for_sweeps(budget.usage(minutes=3)) == 1000 - budget.reserves["sweep"] - 3


def test_in_scope_rooms_only(app):
    now = utcnow()
    with app.app_context():
        session = db.session()
        ids = _rooms(session, [None, None], now)
        session.execute(sa.update(Room).where(Room.id == ids[1]).values(in_scope=False))
        session.commit()
        plan = sweep.plan(session, _config(), call_budget(app).usage(minutes=3), now)
    assert plan.room_ids == [ids[0]] and plan.rooms == 1

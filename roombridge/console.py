"""What the admin console reads and does beyond rooms and channels: room overviews, failed jobs, field checks.

`room_overviews` loads the integration state of any number of rooms in a fixed number of
queries (channels, last pushes, sync states, conflicts: one each), so the console's room
table costs the same for five rooms as for five thousand.

Failed jobs live in RQ's FailedJobRegistry of each queue, in Redis, for FAILURE_TTL (see
jobs/__init__.py); a job lands there only once RQ has used up its retries. Retrying one
puts it back on its queue, at the end, with its original arguments.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy.orm import Session

from roombridge import notifications
from roombridge.booking.rules import check_room_fields
from roombridge.models import Reservation, ReservationStatus, Room, RoomSyncState, SkippedEvent, WatchChannel
from roombridge.queue import QUEUE_NAMES

log = logging.getLogger(__name__)

FAILED_JOBS_SHOWN_PER_QUEUE = 100


# --- rooms ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomOverview:
    room: Room
    channel: WatchChannel | None  # the live channel that expires last, the one renewal replaces
    open_channels: int  # not yet stopped: more than one means an overlap or a stop still pending
    last_push_at: datetime | None  # over every channel the room ever had
    sync: RoomSyncState | None
    conflicts: int  # bookings made in Google over a live reservation, not yet over
    skipped_events: int = 0  # Google events its syncs could not apply (SkippedEvent rows)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.room.health_error:
            found.append(self.room.health_error)
        if self.room.in_scope and self.channel is None:
            found.append("No live push channel: changes made in Google arrive only with the safety-net sync.")
        if self.sync is not None and self.sync.last_error:
            found.append(f"Last sync failed: {self.sync.last_error}")
        if self.skipped_events:
            found.append(f"{self.skipped_events} Google event(s) could not be applied and were skipped.")
        return found


def _live_channel(channels: list[WatchChannel], now: datetime) -> WatchChannel | None:
    # The same choice as roombridge.channels.current_channel, over channels already loaded.
    live = [c for c in channels if c.is_live(now)]
    return max(live, key=lambda c: c.expiration or now, default=None)


def room_overviews(session: Session, room_list: list[Room], now: datetime,
                   redis: Redis | None = None) -> list[RoomOverview]:
    """The integration state of each room, in room_list's order, in five queries whatever its length.

    Given `redis`, "last push" also counts pushes not yet added to the rows by a sync (one
    round trip): with the workers down or behind, the console still shows pushes arriving.
    """
    ids = [room.id for room in room_list]
    if not ids:
        return []
    open_by_room: dict[int, list[WatchChannel]] = defaultdict(list)
    for channel in session.scalars(
        sa.select(WatchChannel).where(WatchChannel.room_id.in_(ids), WatchChannel.stopped_at.is_(None))
    ):
        open_by_room[channel.room_id].append(channel)
    last_push = dict(session.execute(
        sa.select(WatchChannel.room_id, sa.func.max(WatchChannel.last_push_at))
        .where(WatchChannel.room_id.in_(ids)).group_by(WatchChannel.room_id)
    ).all())
    if redis is not None:
        _add_pending_pushes(redis, open_by_room, last_push)
    syncs = {s.room_id: s for s in session.scalars(sa.select(RoomSyncState).where(RoomSyncState.room_id.in_(ids)))}
    conflicts = dict(session.execute(
        sa.select(Reservation.room_id, sa.func.count())
        .where(Reservation.room_id.in_(ids), Reservation.status == ReservationStatus.CONFLICT,
               Reservation.end_at > now)
        .group_by(Reservation.room_id)
    ).all())
    skipped = dict(session.execute(
        sa.select(SkippedEvent.room_id, sa.func.count()).where(SkippedEvent.room_id.in_(ids))
        .group_by(SkippedEvent.room_id)
    ).all())
    return [
        RoomOverview(room=room, channel=_live_channel(open_by_room[room.id], now),
                     open_channels=len(open_by_room[room.id]), last_push_at=last_push.get(room.id),
                     sync=syncs.get(room.id), conflicts=conflicts.get(room.id, 0),
                     skipped_events=skipped.get(room.id, 0))
        for room in room_list
    ]


def skipped_events(session: Session, room: Room, limit: int = 50) -> list[SkippedEvent]:
    """The Google events the room's syncs could not apply, most recently skipped first."""
    return list(session.scalars(
        sa.select(SkippedEvent).where(SkippedEvent.room_id == room.id)
        .order_by(SkippedEvent.last_skipped_at.desc(), SkippedEvent.id).limit(limit)
    ))


def _add_pending_pushes(redis: Redis, open_by_room: dict[int, list[WatchChannel]],
                        last_push: dict[int, datetime | None]) -> None:
    by_id = {c.id: c.room_id for room_channels in open_by_room.values() for c in room_channels}
    try:
        pending = notifications.pending_pushes(redis, list(by_id))
    except Exception:  # Redis down: the console still shows what the database knows
        log.warning("could not read the pushes counted in Redis", exc_info=True)
        return
    for channel_id, pushes in pending.items():
        room_id, seen = by_id[channel_id], last_push.get(by_id[channel_id])
        if pushes.last_push_at is not None and (seen is None or pushes.last_push_at > seen):
            last_push[room_id] = pushes.last_push_at


def room_conflicts(session: Session, room: Room, now: datetime, limit: int = 50) -> list[Reservation]:
    """The room's conflicts still to come, soonest first, with what each clashes with loaded alongside."""
    found = list(session.scalars(
        sa.select(Reservation)
        .where(Reservation.room_id == room.id, Reservation.status == ReservationStatus.CONFLICT,
               Reservation.end_at > now)
        .order_by(Reservation.start_at, Reservation.id).limit(limit)
    ))
    clash_ids = {r.conflict_with_id for r in found if r.conflict_with_id}
    if clash_ids:  # into the identity map, so the template's look-ups cost no query each
        list(session.scalars(sa.select(Reservation).where(Reservation.id.in_(clash_ids))))
    return found


def field_errors(values: dict[str, object]) -> dict[str, str]:
    """Each editable room field's own message, by the rules rooms.add_room and rooms.edit_room apply."""
    return {name: messages[0] for name, messages in check_room_fields(values)[1].items()}


# --- failed jobs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedJob:
    id: str
    queue: str
    function: str  # e.g. "jobs.sync.sync_room"
    arguments: str  # as RQ describes the call, e.g. "jobs.sync.sync_room(3, False)"
    failed_at: datetime | None
    reason: str  # the last line of the traceback: the exception and its message
    traceback: str


def _reason(traceback: str) -> str:
    lines = [line.strip() for line in (traceback or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no reason recorded"


def failed_jobs(conn: Redis, limit_per_queue: int = FAILED_JOBS_SHOWN_PER_QUEUE) -> list[FailedJob]:
    """Failed jobs of every queue, most recent first."""
    found: list[FailedJob] = []
    for name in QUEUE_NAMES:
        registry = FailedJobRegistry(name, connection=conn)
        ids = registry.get_job_ids(0, limit_per_queue - 1, desc=True)
        for job in Job.fetch_many(ids, connection=conn):
            if job is None:  # expired between the two calls
                continue
            result = job.latest_result()
            traceback = (result.exc_string if result is not None else None) or ""
            found.append(FailedJob(
                id=job.id, queue=name, function=job.func_name, arguments=job.get_call_string() or job.func_name,
                failed_at=(result.created_at if result is not None else None) or job.ended_at,
                reason=_reason(traceback), traceback=traceback,
            ))
    return sorted(found, key=lambda j: j.failed_at.timestamp() if j.failed_at else 0.0, reverse=True)


def failed_job_count(conn: Redis) -> int:
    return sum(FailedJobRegistry(name, connection=conn).count for name in QUEUE_NAMES)


def retry_failed_job(conn: Redis, queue_name: str, job_id: str) -> bool:
    """Put a failed job back on its queue; False if it is no longer among the failed (retried, expired)."""
    if queue_name not in QUEUE_NAMES:
        return False
    registry = FailedJobRegistry(queue_name, connection=conn)
    try:
        registry.requeue(job_id)
    except (NoSuchJobError, InvalidJobOperation):
        return False
    return True

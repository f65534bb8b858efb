"""Sync jobs: mirror one room from Google, and the periodic safety net over every room.

`sync_room` is enqueued only through the core's coalescing (roombridge/notifications.py:
`request_sync`, and the webhook's `take_push`), which announce `SyncRequested` once they set
the room's queued marker; `on_sync_requested` turns that into the job. The job holds the room's lock
(one sync of a room at a time across workers), waits its turn (pacing), and calls the
engine (roombridge/sync.py).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import current_app
from rq import Retry

from jobs import job
from roombridge import db, notifications, sync
from roombridge.config import Config
from roombridge.gcal import CalendarGateway
from roombridge.models import Room
from roombridge.queue import redis
from roombridge.unit_of_work import SyncRequested, unit_of_work

log = logging.getLogger(__name__)

# Retried: Google unavailable after the gateway's own retries, a reservation edited while we
# applied (StaleDataError), a booking that took the slot between our check and our write.
# Each retry starts over from the stored token, so nothing is lost or applied twice.
SYNC_RETRY = Retry(max=4, interval=[2, 10, 60, 300])


def on_sync_requested(event: SyncRequested) -> None:
    sync_room.enqueue(event.room_id)


@job("sync", timeout=900, retry=SYNC_RETRY)
def sync_room(room_id: int, full: bool = False) -> dict | None:
    """Sync one room under its lock, paced and coalesced; returns a summary (None: not synced now)."""
    config: Config = current_app.config["ROOMBRIDGE"]
    conn = redis()
    lock = sync.RoomLock(conn, room_id)
    if not lock.acquire(wait_seconds=sync.LOCK_WAIT_SECONDS):
        # Another worker has been syncing this room for long; try again later. The queued
        # marker is still set, so requests meanwhile do not pile up more jobs.
        log.info("room %s is being synced elsewhere; re-queued", room_id)
        sync_room.enqueue(room_id, full)
        return None
    try:
        full = notifications.take_turn(conn, room_id, float(config.SYNC_MIN_INTERVAL_SECONDS), full)
        try:
            report = sync.run_sync(db.session(), conn, CalendarGateway.for_app(kind="sync"), config, room_id, full)
        except Exception:
            if full:
                notifications.keep_full_request(conn, room_id)
            raise
    finally:
        lock.release()
    if report is None:
        return None
    return {"changes": report.changes, "pages": report.pages, "full": report.full, "events": report.events,
            "actions": report.actions}


@job("channels", timeout=300)
def safety_net_sync() -> int:
    """Ask for an incremental sync of every in-scope room, since Google drops some pushes.

    Cheap: a room with no change costs one events.list call; a room already queued costs
    nothing. Returns how many syncs were enqueued.
    """
    with unit_of_work(write=False) as session:
        room_ids = list(session.scalars(sa.select(Room.id).where(Room.in_scope.is_(True)).order_by(Room.id)))
    return sum(1 for room_id in room_ids if notifications.request_sync(room_id))

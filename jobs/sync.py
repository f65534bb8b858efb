"""Sync jobs: mirror one room from Google; the rolling safety net over every room (roombridge/sweep.py).

`sync_room` is enqueued only through the core's coalescing (roombridge/notifications.py:
`request_sync`, and the webhook's `take_push`), which announce `SyncRequested` once they set
the room's queued marker; `on_sync_requested` turns that into the job. The job holds the room's lock
(one sync of a room at a time across workers), waits its turn (pacing), and calls the
engine (roombridge/sync.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app
from rq import Retry

from jobs import job
from roombridge import db, notifications, sweep, sync
from roombridge.config import Config
from roombridge.db import utcnow
from roombridge.gcal import CalendarGateway, OverBudget, call_budget
from roombridge.queue import redis
from roombridge.unit_of_work import SyncRequested, unit_of_work

log = logging.getLogger(__name__)

# Retried: Google unavailable after the gateway's own retries, a reservation edited while we
# applied (StaleDataError), a booking that took the slot between our check and our write.
# Each retry starts over from the stored token, so nothing is lost or applied twice.
SYNC_RETRY = Retry(max=4, interval=[2, 10, 60, 300])


def on_sync_requested(event: SyncRequested) -> None:
    if event.paced:
        sweep_room.enqueue(event.room_id, full=event.full)
    else:
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
    """One tick of the rolling safety net (roombridge/sweep.py): plan, keep the plan, spread its sweeps.

    Returns how many sweeps were enqueued.
    """
    config: Config = current_app.config["ROOMBRIDGE"]
    conn, now = redis(), utcnow()
    usage = call_budget(current_app).usage(minutes=sweep.LOOKBACK_MINUTES)
    with unit_of_work(write=False) as session:
        plan = sweep.plan(session, config, usage, now)
    sweep.keep(conn, plan)
    if plan.shortfall:
        log.warning("safety net: %s", plan.shortfall)
    # Spread over the tick, so the sweeps meet the budget a few at a time, not as one burst.
    room_ids = sweep.claim(conn, plan)
    gap = float(config.SAFETY_SYNC_INTERVAL_SECONDS) / max(1, len(room_ids))
    for n, room_id in enumerate(room_ids):
        if n:
            sweep_room.enqueue_at(now + timedelta(seconds=n * gap), room_id, now.isoformat())
        else:
            sweep_room.enqueue(room_id, now.isoformat())
    return len(room_ids)


@job("sweep", timeout=900)
def sweep_room(room_id: int, planned_at: str | None = None, full: bool = False) -> dict | None:
    """Sync one room for the safety net, or its first sync, with the budget's `sweep` kind.

    Skipped when another sync of the room runs now or ran since `planned_at` (a push covered it),
    and dropped when the budget refuses: the room stays the stalest and the next tick takes it.
    """
    config: Config = current_app.config["ROOMBRIDGE"]
    conn = redis()
    lock = sync.RoomLock(conn, room_id)
    if not lock.acquire():
        return None
    try:
        report = sync.run_sync(db.session(), conn, CalendarGateway.for_app(kind="sweep"), config, room_id,
                               full, unless_synced_since=datetime.fromisoformat(planned_at) if planned_at else None)
    except OverBudget as refused:
        log.info("sweep of room %s dropped: %s", room_id, refused)
        return None
    finally:
        lock.release()
    return None if report is None else {"changes": report.changes, "pages": report.pages, "full": report.full}

"""Sync jobs: mirror one room from Google, and the periodic safety net over every room.

Enqueue `sync_room` only through `roombridge.sync.request_sync`, which coalesces requests.
"""

from __future__ import annotations

import sqlalchemy as sa
from rq import Retry

from jobs import job
from roombridge import db
from roombridge.models import Room

# Retried: Google unavailable after the gateway's own retries, a reservation edited while we
# applied (StaleDataError), a booking that took the slot between our check and our write.
# Each retry starts over from the stored token, so nothing is lost or applied twice.
SYNC_RETRY = Retry(max=4, interval=[2, 10, 60, 300])


@job("sync", timeout=900, retry=SYNC_RETRY)
def sync_room(room_id: int, full: bool = False) -> dict | None:
    """Sync one room (lock, pacing and coalescing in roombridge.sync); returns a summary."""
    from roombridge.sync import run_sync_job

    report = run_sync_job(room_id, full)
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
    from roombridge.sync import request_sync

    room_ids = list(db.session().scalars(sa.select(Room.id).where(Room.in_scope.is_(True)).order_by(Room.id)))
    return sum(1 for room_id in room_ids if request_sync(room_id))

"""Jobs the admin console enqueues: replacing one room's channel now (its "Renew channel" button).

Resyncs go through roombridge.sync.request_sync, which coalesces them; nothing here for those.
"""

from __future__ import annotations

import logging
from datetime import datetime

from flask import current_app
from rq import Retry

from jobs import job
from roombridge import channels, db
from roombridge.db import utcnow
from roombridge.gcal import CalendarGateway, CalendarNotInScope
from roombridge.models import Room

log = logging.getLogger(__name__)


@job("channels", retry=Retry(max=3, interval=[5, 30, 120]))
def renew_room_channel(room_id: int, actor: str = "system", now: str | None = None) -> str | None:
    """Replace the room's channel whatever its expiry; the new channel's id, or None if none could be made.

    A refusal (calendar unshared, ...) is kept on the room as its health error, for the admin
    to read: retrying would not help. A retriable Google error propagates, so RQ retries.
    """
    session = db.session()
    room = session.get(Room, room_id)
    if room is None or not room.in_scope:
        return None
    moment = datetime.fromisoformat(now) if now else utcnow()
    try:
        channel = channels.renew_room(session, CalendarGateway.for_app(), room, current_app.config["ROOMBRIDGE"],
                                      moment, actor=actor)
    except channels.ChannelRefused as refused:
        log.warning("renewal of room %s refused: %s", room_id, refused)
        return None
    except CalendarNotInScope:
        session.rollback()  # taken out of scope meanwhile: its channels were stopped then
        return None
    return channel.id

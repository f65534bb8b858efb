"""Channel jobs: each channel's own renewal, the periodic renewal pass, and the admin console's
"Renew channel" button.

Opening a channel announces `ChannelOpened`; `on_channel_opened` schedules that channel's own
`renew_channel` at its renewal moment, under a job id keyed by the channel (scheduling it twice
changes nothing). `renew_channels` runs every scheduler tick (see jobs/schedule.py) as the
safety net: a cheap pass when nothing is due (roombridge/channels.py).
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
from roombridge.queue import RedisLock, redis
from roombridge.unit_of_work import ChannelOpened

log = logging.getLogger(__name__)

RENEWAL_LOCK_KEY = "roombridge:channels:renewal-pass"
RENEWAL_LOCK_TTL_SECONDS = 30.0  # renewed while the pass runs; frees itself if the worker dies


def _now(now: str | None) -> datetime:
    """`now` as the job was given it (ISO 8601, tests with a simulated clock), else the clock."""
    return datetime.fromisoformat(now) if now else utcnow()


def renewal_job_id(channel_id: str) -> str:
    return f"renew-channel-{channel_id}"


def on_channel_opened(event: ChannelOpened) -> None:
    renew_channel.enqueue_at(event.renew_at, event.channel_id, job_id=renewal_job_id(event.channel_id))


# Retried soon: the channel lapses within its margin; after that the periodic pass opens a new one.
@job("channels", retry=Retry(max=3, interval=[5, 15, 30]))
def renew_channel(channel_id: str, now: str | None = None) -> None:
    """Replace the channel at its renewal moment, if it is still its room's current one."""
    again = channels.renew_channel(db.session(), CalendarGateway.for_app(kind="renewal"), channel_id,
                                   current_app.config["ROOMBRIDGE"], _now(now))
    if again is not None:  # ran before its moment (another host's clock): once more, then
        renew_channel.enqueue_at(again, channel_id)


@job("channels", timeout=900)
def renew_channels(now: str | None = None) -> dict:
    """Give every in-scope room a live channel, replace those due, stop the superseded.

    One pass at a time: paced by the budget, a pass may outlast a scheduler tick, and two passes
    side by side would both open a channel for the same room.
    """
    lock = RedisLock(redis(), RENEWAL_LOCK_KEY, RENEWAL_LOCK_TTL_SECONDS)
    if not lock.acquire():
        log.info("channel renewal: the previous pass still runs; this tick skipped")
        return {}
    try:
        session = db.session()
        gateway = CalendarGateway.for_app(kind="renewal")
        report = channels.renew_due(session, gateway, current_app.config["ROOMBRIDGE"], _now(now))
    finally:
        lock.release()
    if report.as_dict():
        log.info("channel renewal: %s", report.as_dict())
    return report.as_dict()


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
    try:
        channel = channels.renew_room(session, CalendarGateway.for_app(kind="renewal"), room,
                                      current_app.config["ROOMBRIDGE"], _now(now), actor=actor)
    except channels.ChannelRefused as refused:
        log.warning("renewal of room %s refused: %s", room_id, refused)
        return None
    except CalendarNotInScope:
        return None  # taken out of scope meanwhile: its channels were stopped then
    return channel.id

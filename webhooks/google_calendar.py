"""POST /webhooks/google/calendar: Google Calendar push notifications (events.watch).

The receiver only verifies, records and hands off; it never calls Google. Per request: one
lookup of the channel by primary key, one small UPDATE, one or two Redis round trips.

Answers, chosen with Google's rules in mind (2xx and 102 are success; 500, 502, 503 and
504 make Google retry with backoff; anything else is a failure it does not retry):

- 400: a required header (X-Goog-Channel-ID, X-Goog-Resource-ID, X-Goog-Resource-State)
  is missing or malformed, or X-Goog-Message-Number is not a number. Not something Google
  sends; nothing to retry.
- 404: no channel with that id. Not retried, which is what we want for a channel we do not
  know (or forgot after stopping it).
- 403: the channel token does not match (compared in constant time), or the resource id is
  not the one the channel was made for. Someone other than Google, or a mix-up.
- 200, ignored: the channel is stopped or expired. Google says a stopped channel may still
  deliver; the live channel of the room reports the same change.
- 200: ``sync`` (the handshake after events.watch) is recorded in sync_received_at.
- 200: ``exists`` (any change to the room's events) is recorded (last_push_at,
  last_message_number, push_count) and a sync of the room is requested, coalesced with any
  already queued (roombridge/sync.py).
- 503: Redis or the database is unreachable, so the sync could not be requested or the
  channel not checked. Google retries with backoff, and the retry does the work.
"""

from __future__ import annotations

import hmac
import logging

import sqlalchemy as sa
from flask import Response, request
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from roombridge import channels, db
from roombridge.db import utcnow
from roombridge.models import WatchChannel
from roombridge.queue import redis
from roombridge.sync import request_sync
from webhooks import bp

log = logging.getLogger(__name__)

CHANNEL_ID_MAX = 64
TOKEN_MAX = 256
RESOURCE_ID_MAX = 256
CHANGE_STATES = {"exists", "not_exists"}  # events only send exists; not_exists is a change all the same
STATES = {"sync"} | CHANGE_STATES


def _answer(status: int, text: str) -> Response:
    return Response(text + "\n", status=status, mimetype="text/plain")


class BadPush(ValueError):
    pass


def _read_headers(headers) -> tuple[str, str, str, str, int | None]:
    channel_id = headers.get("X-Goog-Channel-ID", "").strip()
    resource_id = headers.get("X-Goog-Resource-ID", "").strip()
    state = headers.get("X-Goog-Resource-State", "").strip()
    token = headers.get("X-Goog-Channel-Token", "")
    raw_number = headers.get("X-Goog-Message-Number", "").strip()
    if not channel_id or len(channel_id) > CHANNEL_ID_MAX:
        raise BadPush("X-Goog-Channel-ID missing or too long")
    if not resource_id or len(resource_id) > RESOURCE_ID_MAX:
        raise BadPush("X-Goog-Resource-ID missing or too long")
    if state not in STATES:
        raise BadPush("X-Goog-Resource-State missing or unknown")
    if len(token) > TOKEN_MAX:
        raise BadPush("X-Goog-Channel-Token too long")
    number = None
    if raw_number:
        if not raw_number.isdigit() or len(raw_number) > 18:
            raise BadPush("X-Goog-Message-Number is not a number")
        number = int(raw_number)
    return channel_id, resource_id, state, token, number


@bp.post("/google/calendar")
def google_calendar_push() -> Response:
    try:
        channel_id, resource_id, state, token, number = _read_headers(request.headers)
    except BadPush as problem:
        return _answer(400, str(problem))

    session = db.session()
    try:
        # Read the channel, then record the push: one write transaction (SQLite: BEGIN IMMEDIATE).
        db.begin_write(session)
        channel = session.get(WatchChannel, channel_id)
        if channel is None:
            log.info("push for unknown channel %s", channel_id)
            return _answer(404, "unknown channel")
        if not hmac.compare_digest(token.encode(), (channel.token or "").encode()):
            log.warning("push for channel %s with a wrong token", channel_id)
            return _answer(403, "wrong token")
        # The resource id is learnt from the watch answer; the handshake may arrive before it is stored.
        if channel.resource_id is not None and not hmac.compare_digest(resource_id, channel.resource_id):
            log.warning("push for channel %s names another resource", channel_id)
            return _answer(403, "wrong resource")
        now = utcnow()
        if not channel.is_live(now):
            log.info("ignored a %s push on stopped or expired channel %s", state, channel_id)
            return _answer(200, "channel stopped; ignored")
        room_id = channel.room_id
        if state == "sync":
            channel.sync_received_at = now
            session.commit()
            return _answer(200, "sync recorded")
        # Increment in SQL: simultaneous pushes on one channel must not lose a count.
        session.execute(
            sa.update(WatchChannel)
            .where(WatchChannel.id == channel_id)
            .values(push_count=WatchChannel.push_count + 1, last_push_at=now, last_message_number=number)
        )
        session.commit()
    except OperationalError:
        session.rollback()
        log.exception("database unavailable for push on channel %s", channel_id)
        return _answer(503, "database unavailable")

    try:
        channels.record_push(redis(), now)
        enqueued = request_sync(room_id)
    except RedisError:
        log.exception("could not request a sync of room %s; Google will retry", room_id)
        return _answer(503, "queue unavailable")
    return _answer(200, "sync requested" if enqueued else "sync already requested")

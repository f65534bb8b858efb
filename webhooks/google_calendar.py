"""POST /webhooks/google/calendar: Google Calendar push notifications (events.watch).

The receiver only verifies, records and hands off; it never calls Google. Per request: one
UPDATE ... RETURNING by primary key (it finds the channel and records the push; rolled back
if the push is refused), its commit, and one Redis round trip (plus the enqueue, when no
sync of the room is already waiting).

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


def _refusal(channel, token: str, resource_id: str, now) -> tuple[int, str] | None:
    """Why a push on this channel row is not acted on (status, text), or None to act on it."""
    if channel is None:
        return 404, "unknown channel"
    if not hmac.compare_digest(token.encode(), (channel.token or "").encode()):
        return 403, "wrong token"
    # The resource id is learnt from the watch answer; the handshake may arrive before it is stored.
    if channel.resource_id is not None and not hmac.compare_digest(resource_id.encode(), channel.resource_id.encode()):
        return 403, "wrong resource"
    if channel.stopped_at is not None or (channel.expiration is not None and channel.expiration <= now):
        # Google says a stopped channel may still deliver; the room's live channel reports the change too.
        return 200, "channel stopped; ignored"
    return None


@bp.post("/google/calendar")
def google_calendar_push() -> Response:
    try:
        channel_id, resource_id, state, token, number = _read_headers(request.headers)
    except BadPush as problem:
        return _answer(400, str(problem))

    session = db.session()
    now = utcnow()
    if state == "sync":
        recorded = {"sync_received_at": now}
    else:
        # Incremented in SQL: simultaneous pushes on one channel must not lose a count.
        recorded = {"push_count": WatchChannel.push_count + 1, "last_push_at": now, "last_message_number": number}
    try:
        db.begin_write(session)
        # One round trip finds the channel and records the push; rolled back below if refused.
        channel = session.execute(
            sa.update(WatchChannel)
            .where(WatchChannel.id == channel_id)
            .values(**recorded)
            .returning(WatchChannel.token, WatchChannel.resource_id, WatchChannel.room_id,
                       WatchChannel.stopped_at, WatchChannel.expiration)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        refusal = _refusal(channel, token, resource_id, now)
        if refusal is not None:
            session.rollback()
            status, reason = refusal
            (log.warning if status == 403 else log.info)("push on channel %s: %s", channel_id, reason)
            return _answer(status, reason)
        session.commit()
    except OperationalError:
        session.rollback()
        log.exception("database unavailable for push on channel %s", channel_id)
        return _answer(503, "database unavailable")
    if state == "sync":
        return _answer(200, "sync recorded")

    try:
        # The minute's push counter and the sync request travel in one Redis round trip.
        pipe = redis().pipeline(transaction=False)
        channels.record_push(pipe, now)
        enqueued = request_sync(channel.room_id, pipeline=pipe)
    except RedisError:
        log.exception("could not request a sync of room %s; Google will retry", channel.room_id)
        return _answer(503, "queue unavailable")
    return _answer(200, "sync requested" if enqueued else "sync already requested")

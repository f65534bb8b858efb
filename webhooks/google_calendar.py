"""POST /webhooks/google/calendar: Google Calendar push notifications (events.watch).

The receiver only verifies, records and hands off; it never calls Google. A change push
costs one Redis call and no database work (`roombridge.notifications.take_push`): the channel's
entry in Redis (written by the channel lifecycle, roombridge/channels.py) is checked, the
push counted, and a sync of the room requested, coalesced with any already waiting (plus
the enqueue, when none was). Only when the entry is missing (Redis restarted empty) is the
channel read from the database, and the entry written back.

Answers, chosen with Google's rules in mind (2xx and 102 are success; 500, 502, 503 and
504 make Google retry with backoff; anything else is a failure it does not retry):

- 400: a required header (X-Goog-Channel-ID, X-Goog-Resource-ID, X-Goog-Resource-State)
  is missing or malformed, X-Goog-Message-Number is not a number, or a header holds a NUL
  character (roombridge/text.py: nothing the database could not store goes further). Not
  something Google sends; nothing to retry.
- 404: no channel with that id. Not retried, which is what we want for a channel we do not
  know (or forgot after stopping it). An id that is not one we issue (a UUID) is refused before
  any lookup; an unknown one is remembered in Redis for a minute, so a flood of pushes naming it
  costs one database read.
- 200, ignored: a message number the channel has already seen (a replay): no sync requested.
- 403: the channel token does not match (compared as SHA-256 digests in Redis, see
  roombridge/notifications.py why that leaks nothing; in constant time when read from the database),
  or the resource id is not the one the channel was made for. Someone other than Google,
  or a mix-up.
- 200, ignored: the channel is stopped or expired. Google says a stopped channel may still
  deliver; the live channel of the room reports the same change.
- 200: ``sync`` (the handshake after events.watch) is recorded in sync_received_at (a
  database write: once per channel).
- 200: ``exists`` (any change to the room's events) is counted and a sync of the room is
  requested. Also while the database is down: the push is safe in Redis and the sync it
  requested is retried until the database is back.

A push that is taken (the two 200s just above) is answered without a body: Google reads only
the status, and under gunicorn a body is a second write to the socket for every push. Every
other answer says why in a line of text. Each answer is counted by that text
(`roombridge_webhook_pushes_total`), the taken ones included.
- 503: Redis is unreachable, so the sync could not be requested; or the channel had to be
  read from the database (no entry in Redis, or a handshake) and the database is
  unreachable. Google retries with backoff, and the retry does the work.
- 413: a body over the app's MAX_CONTENT_LENGTH (Google's pushes have none); 405: not a POST.

`PushReceiver` serves this one path as plain WSGI in front of the Flask app, so a push skips
what the app does for people on every request (the rate limiter's hooks, CSRF, the session,
the text check of forms, ProxyFix, the chunked-body middleware): a push costs one Redis call
and a few microseconds besides, which is what lets the receiver keep up with a bare endpoint
(benchmarks/webhook_ingest.py). What a push needs of those is done here: its headers' text is
checked (400), its body size bounded (413), and its answers carry the app's security headers.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from flask import Flask
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from werkzeug.datastructures import EnvironHeaders

from roombridge import notifications
from roombridge.channels import WEBHOOK_PATH
from roombridge.db import utcnow
from roombridge.metrics import WEBHOOK_PUSHES
from roombridge.models import WatchChannel
from roombridge.notifications import take_push
from roombridge.queue import redis
from roombridge.text import unstorable_fields
from roombridge.unit_of_work import unit_of_work

log = logging.getLogger(__name__)

CHANNEL_ID_MAX = 64
TOKEN_MAX = 256
RESOURCE_ID_MAX = 256
CHANGE_STATES = {"exists", "not_exists"}  # events only send exists; not_exists is a change all the same
STATES = {"sync"} | CHANGE_STATES
# Answers that mean the push was taken; every other answer is a refusal, counted by its text.
TAKEN = frozenset({"sync requested", "sync already requested", "sync recorded"})
# The channel ids we issue (roombridge/channels.py): lowercase UUIDs. ASCII only, whatever re's defaults.
OUR_CHANNEL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)


def _answer(status: int, text: str) -> tuple[int, str]:
    # One in-process counter increment (a few microseconds), the texts a small fixed set.
    WEBHOOK_PUSHES.labels("taken" if text in TAKEN else "refused", text).inc()
    return status, text


class BadPush(ValueError):
    pass


def _read_headers(headers) -> tuple[str, str, str, str, int | None]:
    unstorable = unstorable_fields((name, value) for name, value in headers.items()
                                   if name.lower().startswith("x-goog-"))
    if unstorable:
        # One fixed answer (the metric's label set stays small whatever names are sent); the log names it.
        log.info("push refused: %s holds a NUL character", unstorable[0])
        raise BadPush("a header holds a NUL character")
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
        if not raw_number.isascii() or not raw_number.isdigit() or len(raw_number) > 18:
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


def take(headers) -> tuple[int, str]:
    """Answer one push (status, text), from its headers; inside the app's context."""
    try:
        channel_id, resource_id, state, token, number = _read_headers(headers)
    except BadPush as problem:
        return _answer(400, str(problem))
    if not OUR_CHANNEL_ID.fullmatch(channel_id):
        return _refuse(channel_id, 404, "unknown channel")  # not an id we issue: no lookup at all
    now = utcnow()
    try:
        if state == "sync":
            if redis().exists(notifications.unknown_channel_key(channel_id)):
                return _refuse(channel_id, 404, "unknown channel")
            return _record_handshake(channel_id, resource_id, token, now)
        taken = take_push(redis(), channel_id, token, resource_id, number, now)
        if taken.verdict == "known unknown":
            return _refuse(channel_id, 404, "unknown channel")
        if taken.verdict == "unknown":
            refusal = _check_in_database(channel_id, resource_id, token, now)
            if refusal is not None:
                return _refuse(channel_id, *refusal)
            taken = take_push(redis(), channel_id, token, resource_id, number, now)
    except RedisError:
        log.exception("could not take the push on channel %s; Google will retry", channel_id)
        return _answer(503, "queue unavailable")
    except OperationalError:  # its unit of work has rolled back
        log.exception("database unavailable for push on channel %s; Google will retry", channel_id)
        return _answer(503, "database unavailable")
    if taken.verdict == "accepted":
        return _answer(200, "sync requested" if taken.enqueued else "sync already requested")
    if taken.verdict == "stopped":
        return _refuse(channel_id, 200, "channel stopped; ignored")
    if taken.verdict == "replayed":
        return _refuse(channel_id, 200, "message already seen; ignored")
    if taken.verdict in ("wrong token", "wrong resource"):
        return _refuse(channel_id, 403, taken.verdict)
    # Written a moment ago and gone already: only a race with the entry's expiry. Let Google retry.
    log.warning("channel %s vanished from Redis while its push was taken", channel_id)
    return _answer(503, "try again")


def _refuse(channel_id: str, status: int, reason: str) -> tuple[int, str]:
    (log.warning if status == 403 else log.info)("push on channel %s: %s", channel_id, reason)
    return _answer(status, reason)


def _check_in_database(channel_id: str, resource_id: str, token: str, now) -> tuple[int, str] | None:
    """The channel has no entry in Redis: check the push against its row, and write the entry back."""
    with unit_of_work(write=False) as session:
        channel = session.get(WatchChannel, channel_id)
        if channel is not None:
            notifications.cache_channel(redis(), channel)
        else:
            notifications.remember_unknown_channel(redis(), channel_id)
        return _refusal(channel, token, resource_id, now)


class _Refused(Exception):
    """Raised inside the handshake's unit of work so that it rolls back; carries (status, reason)."""


def _record_handshake(channel_id: str, resource_id: str, token: str, now) -> tuple[int, str]:
    """The ``sync`` push that follows events.watch: recorded on the row (it may beat the watch answer)."""
    try:
        with unit_of_work() as session:
            # One round trip finds the channel and records the handshake; rolled back if refused.
            channel = session.execute(
                sa.update(WatchChannel)
                .where(WatchChannel.id == channel_id)
                .values(sync_received_at=now)
                .returning(WatchChannel.token, WatchChannel.resource_id, WatchChannel.stopped_at,
                           WatchChannel.expiration)
                .execution_options(synchronize_session=False)
            ).one_or_none()
            refusal = _refusal(channel, token, resource_id, now)
            if refusal is not None:
                raise _Refused(*refusal)
    except _Refused as refused:
        if refused.args[0] == 404:
            notifications.remember_unknown_channel(redis(), channel_id)
        return _refuse(channel_id, *refused.args)
    return _answer(200, "sync recorded")


# --- serving it: plain WSGI in front of the Flask app ----------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            413: "Request Entity Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class PushReceiver:
    """WSGI middleware: answers ``POST WEBHOOK_PATH`` itself and hands every other request to `wsgi_app`.

    `flask_app` lends its context (settings, Redis, the database, the jobs' wiring) to each push;
    `headers` are added to every answer (the app's security headers). A body is never read: one
    declared over `max_body` (or a chunked one that runs past it) is refused with 413.
    """

    def __init__(self, flask_app: Flask, wsgi_app: Callable, headers: dict[str, str], max_body: int):
        self.flask_app = flask_app
        self.wsgi_app = wsgi_app
        self.headers = list(headers.items())
        self.max_body = max_body

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != WEBHOOK_PATH:
            return self.wsgi_app(environ, start_response)
        if environ["REQUEST_METHOD"] != "POST":
            return self._send(start_response, 405, "method not allowed", [("Allow", "POST")])
        if self._body_too_large(environ):
            return self._send(start_response, *_answer(413, "body too large"))
        try:
            with self.flask_app.app_context():
                status, text = take(EnvironHeaders(environ))
        except Exception:  # what Flask would do: log it and answer 500, which Google retries
            if self.flask_app.testing:
                raise
            log.exception("push on %s failed", environ.get("HTTP_X_GOOG_CHANNEL_ID", "?"))
            status, text = _answer(500, "internal error")
        return self._send(start_response, status, text)

    def _body_too_large(self, environ: dict) -> bool:
        length = environ.get("CONTENT_LENGTH")
        if length:
            return length.isdigit() and int(length) > self.max_body
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return len(environ["wsgi.input"].read(self.max_body + 1)) > self.max_body
        return False

    def _send(self, start_response: Callable, status: int, text: str, extra=()) -> list[bytes]:
        if text in TAKEN:  # headers only: one write to the socket
            start_response(f"{status} {_REASONS[status]}", [("Content-Length", "0"), *self.headers])
            return []
        body = (text + "\n").encode()
        start_response(f"{status} {_REASONS[status]}",
                       [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                        *extra, *self.headers])
        return [body]

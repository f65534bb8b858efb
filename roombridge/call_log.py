"""The log of Google calls per room: least privilege made visible.

Every Calendar call the gateway makes (roombridge/gcal.py), and every call it refuses before
making because the calendar is not an in-scope room, becomes one `GoogleCall` row: which
room's calendar, the operation (``events.insert``, ``events.list``, ``events.watch``,
``channels.stop``...), its kind in the call budget (write, sync, sweep, renewal), the outcome,
Google's status and how long it took. Admins read it per room and as a summary with the one
line that says what the service account can and cannot do.

Cheap at 10,000 rooms (600 calls a minute, about 860,000 rows a day), and never in a call's way:

- `CallLog.record` is one Redis command (a Lua script: RPUSH, capped at BUFFER_CAP entries,
  the oldest dropped beyond it) after the call has answered; no database work on the call's
  path. It never raises: Redis down or anything else wrong, the record is logged (at most once
  a minute per process) and dropped, and counted in ``roombridge_google_call_log_dropped``;
  for UNAVAILABLE_PAUSE_SECONDS after Redis failed, records are dropped without trying it.
- `flush` (a job each scheduler tick) moves the buffer to the table in batches of
  FLUSH_BATCH rows, one short write transaction and one multi-row INSERT per batch, taking
  the room ids of the batch's calendars in one query. It reads a batch, inserts it, and only
  then trims it off the buffer, under a Redis lock so two flushes never take the same rows:
  the database down, the rows wait in Redis (up to the cap). A flusher that dies between its
  commit and its trim writes that batch twice: at least once, never lost.
- `purge` (a job each tick) deletes rows older than GOOGLE_CALL_LOG_RETENTION_DAYS in
  batches, each its own short transaction, through the index on `at`.

benchmarks/call_log.py measures each of these.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from redis import Redis
from sqlalchemy.orm import Session

from roombridge import metrics
from roombridge.call_budget import KEY_PREFIX, KINDS
from roombridge.models import GoogleCall, Room
from roombridge.queue import LuaScript, RedisLock
from roombridge.unit_of_work import unit_of_work

log = logging.getLogger(__name__)

BUFFER_KEY = metrics.CALL_LOG_BUFFER_KEY
FLUSH_LOCK_KEY = f"{KEY_PREFIX}:call-log:flush"
# About 5 hours of calls at Google's 600 a minute (~120 bytes each, ~25 MB): the database may be
# away that long before the oldest records are dropped.
BUFFER_CAP = 200_000
FLUSH_BATCH = 5000
FLUSH_MAX_BATCHES = 40  # per run: 200,000 rows, the whole buffer
PURGE_BATCH = 5000
PURGE_MAX_BATCHES = 40  # per run; a day of 10,000 rooms is ~860,000 rows, a tick's share ~300
DROP_LOG_EVERY_SECONDS = 60.0
UNAVAILABLE_PAUSE_SECONDS = 30.0

REFUSED = "refused_by_allowlist"
ROOM_CALENDAR_SUFFIX = "@resource.calendar.google.com"  # Google's room (resource) calendars; gcal.py uses it too
# What the pages filter by; anything else a call ended in is shown as it is.
OUTCOMES = ("ok", "not_found", "gone", "conflict", "rate_limited", "forbidden", "client_error", "server_error",
            "network", REFUSED)

# KEYS: the buffer. ARGV: the record, the cap. Returns 1, or 0 when the oldest record was dropped for it.
_PUSH = LuaScript("""
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
if length > tonumber(ARGV[2]) then
  redis.call('LPOP', KEYS[1])
  return 0
end
return 1
""")


def outcome_of(status: int | None, reason: str | None) -> str:
    """The log's word for how a call ended: Google's status (and reason), or ``network`` with none."""
    if status is None:
        return "network"
    if status < 300:
        return "ok"
    if status == 429 or (status == 403 and reason in {"rateLimitExceeded", "userRateLimitExceeded"}):
        return "rate_limited"
    named = {404: "not_found", 410: "gone", 409: "conflict", 403: "forbidden"}
    if status in named:
        return named[status]
    return "server_error" if status >= 500 else "client_error"


@dataclass(frozen=True)
class CallRecord:
    at: float  # epoch seconds, when the call began
    calendar_id: str | None  # None: a call on no calendar we could name
    operation: str
    kind: str
    outcome: str
    status: int | None
    duration_ms: int

    def encode(self) -> str:
        return json.dumps([round(self.at, 3), self.calendar_id, self.operation, self.kind, self.outcome, self.status,
                           self.duration_ms], separators=(",", ":"))

    @classmethod
    def decode(cls, raw: bytes | str) -> CallRecord:
        at, calendar_id, operation, kind, outcome, status, duration_ms = json.loads(raw)
        return cls(float(at), calendar_id, str(operation), str(kind), str(outcome), status, int(duration_ms))


class CallLog:
    """The buffer in Redis that the gateway records its calls into.

    Once Redis failed (here, or for the gateway's budget), records are dropped without asking
    Redis for UNAVAILABLE_PAUSE_SECONDS: a Redis that hangs rather than refuses would otherwise
    add its socket timeouts to every Calendar call, on top of the budget's.
    """

    def __init__(self, conn: Redis):
        self.conn = conn

    def record(self, call: CallRecord) -> None:
        """Buffer one call; never raises (the call it describes has already happened)."""
        if time.monotonic() < _unavailable_until.get(self.conn.connection_pool, 0.0):
            _dropped("unavailable", None)
            return
        try:
            kept = _PUSH(self.conn, keys=(BUFFER_KEY,), args=(call.encode(), BUFFER_CAP))
        except Exception as err:  # Redis down, or anything else: the Calendar call must not care
            self.unavailable()
            _dropped("unavailable", err)
            return
        if not kept:
            _dropped("buffer_full", None)

    def unavailable(self) -> None:
        """This Redis just failed: drop records without trying it for a while."""
        _unavailable_until[self.conn.connection_pool] = time.monotonic() + UNAVAILABLE_PAUSE_SECONDS

    def waiting(self) -> int:
        """Records not yet flushed to the table."""
        return int(self.conn.llen(BUFFER_KEY))


# Per Redis connection pool (an app's; a process may hold several apps, as the tests do).
_unavailable_until: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_last_drop_logged = 0.0
_drop_lock = threading.Lock()


def _dropped(reason: str, err: Exception | None) -> None:
    global _last_drop_logged
    metrics.GOOGLE_CALL_LOG_DROPPED.labels(reason).inc()
    with _drop_lock:  # one line a minute per process, not one per call, while Redis is down
        now = time.monotonic()
        if now - _last_drop_logged < DROP_LOG_EVERY_SECONDS and _last_drop_logged:
            return
        _last_drop_logged = now
    if reason == "buffer_full":
        log.warning("Google call log: the buffer holds %d records, nothing flushes it; dropping the oldest",
                    BUFFER_CAP)
    else:
        log.warning("Google call log: records are dropped (%s); the calls themselves go ahead",
                    f"{type(err).__name__}: {err}" if err else "Redis failed a moment ago")


# --- from the buffer to the table, and out of it again ------------------------------------------


def flush(session: Session, conn: Redis, *, batch: int = FLUSH_BATCH, max_batches: int = FLUSH_MAX_BATCHES) -> int:
    """Move buffered records to the table, batch by batch; returns the rows written (0: another flush runs)."""
    lock = RedisLock(conn, FLUSH_LOCK_KEY, ttl_seconds=60)
    if not lock.acquire():
        return 0
    written = 0
    try:
        for _ in range(max_batches):
            raw = conn.lrange(BUFFER_KEY, 0, batch - 1)
            if not raw:
                break
            rows = list(_rows(session, raw))
            if rows:
                with unit_of_work(session):
                    session.execute(sa.insert(GoogleCall), rows)
            conn.ltrim(BUFFER_KEY, len(raw), -1)  # only once they are in the table
            written += len(rows)
            if len(raw) < batch:
                break
    finally:
        lock.release()
    return written


def _rows(session: Session, raw: list[bytes]) -> Iterable[dict]:
    calls = []
    for item in raw:
        try:
            calls.append(CallRecord.decode(item))
        except (ValueError, TypeError):
            log.warning("Google call log: an unreadable record skipped: %r", item[:200])
    calendars = {c.calendar_id for c in calls if c.calendar_id}
    room_ids = dict(session.execute(sa.select(Room.calendar_id, Room.id).where(Room.calendar_id.in_(calendars)))
                    .all()) if calendars else {}
    for call in calls:
        room_id = room_ids.get(call.calendar_id)
        yield {"at": datetime.fromtimestamp(call.at, UTC), "room_id": room_id,
               "calendar_id": None if room_id is not None else (call.calendar_id or None),
               "operation": call.operation[:32], "kind": call.kind[:16], "outcome": call.outcome[:24],
               "status": call.status, "duration_ms": max(0, min(call.duration_ms, 2**31 - 1))}


def purge(session: Session, now: datetime, retention_days: int, *, batch: int = PURGE_BATCH,
          max_batches: int = PURGE_MAX_BATCHES) -> int:
    """Delete rows older than `retention_days`, `batch` at a time, each batch its own transaction."""
    cutoff = now - timedelta(days=retention_days)
    deleted = 0
    for _ in range(max_batches):
        with unit_of_work(session):
            oldest = sa.select(GoogleCall.id).where(GoogleCall.at < cutoff).limit(batch).scalar_subquery()
            count = session.execute(sa.delete(GoogleCall).where(GoogleCall.id.in_(oldest))).rowcount
        deleted += count
        if count < batch:
            break
    return deleted


# --- what the pages and the CLI read ---------------------------------------------------------------


@dataclass(frozen=True)
class CallPage:
    calls: list[GoogleCall]
    page: int
    has_next: bool


def room_calls(session: Session, room_id: int, *, kind: str | None = None, outcome: str | None = None,
               since: datetime | None = None, page: int = 1, per_page: int = 50) -> CallPage:
    """One room's calls, newest first, optionally of one kind, one outcome, since a moment (the (room_id, at) index)."""
    query = sa.select(GoogleCall).where(GoogleCall.room_id == room_id)
    if since is not None:
        query = query.where(GoogleCall.at >= since)
    if kind:
        query = query.where(GoogleCall.kind == kind)
    if outcome:
        query = query.where(GoogleCall.outcome == outcome)
    page = max(1, page)
    found = list(session.scalars(query.order_by(GoogleCall.at.desc(), GoogleCall.id.desc())
                                 .offset((page - 1) * per_page).limit(per_page + 1)))
    return CallPage(found[:per_page], page, len(found) > per_page)


@dataclass(frozen=True)
class RoomCount:
    room_id: int | None
    calendar_id: str | None
    name: str | None
    calls: int
    not_ok: int


@dataclass(frozen=True)
class Summary:
    since: datetime
    total: int
    by_outcome: dict[str, int]
    by_kind: dict[str, dict[str, int]]  # kind -> outcome -> calls
    by_operation: dict[str, int]
    top_rooms: list[RoomCount]
    refused: int  # calls refused by the allowlist in the window: zero expected
    refused_calendars: list[tuple[str, int]]  # the calendars refused, most refused first
    non_room_calls: int  # calls made (not refused) on a calendar that is not a room's (a person's): zero, by design
    rooms_in_scope: int
    rooms_called: int = 0
    kinds: tuple[str, ...] = field(default=KINDS)


def summary(session: Session, since: datetime, *, top: int = 20) -> Summary:
    """The calls since `since`: by outcome, kind and operation, the busiest rooms, the refusals."""
    window = GoogleCall.at >= since
    grouped = session.execute(sa.select(GoogleCall.kind, GoogleCall.outcome, GoogleCall.operation, sa.func.count())
                              .where(window).group_by(GoogleCall.kind, GoogleCall.outcome, GoogleCall.operation)).all()
    by_outcome: dict[str, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    by_operation: dict[str, int] = {}
    for kind, outcome, operation, count in grouped:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + count
        by_kind.setdefault(kind, {})[outcome] = by_kind.get(kind, {}).get(outcome, 0) + count
        by_operation[operation] = by_operation.get(operation, 0) + count
    # One pass over the window per room (10,000 rows at most, to Python); names for the top ones only.
    per_room = session.execute(sa.select(GoogleCall.room_id, sa.func.count(),
                                         sa.func.count().filter(GoogleCall.outcome != "ok"))
                               .where(window, GoogleCall.room_id.is_not(None)).group_by(GoogleCall.room_id)).all()
    busiest = heapq.nsmallest(top, per_room, key=lambda row: (-row[1], row[0]))
    rooms = {room_id: (calendar_id, name) for room_id, calendar_id, name in session.execute(
        sa.select(Room.id, Room.calendar_id, Room.name).where(Room.id.in_([row[0] for row in busiest])))}
    top_rooms = [RoomCount(room_id, *rooms.get(room_id, (None, None)), calls, not_ok)
                 for room_id, calls, not_ok in busiest]
    refused_by = sa.func.coalesce(GoogleCall.calendar_id, Room.calendar_id)
    refused_calendars = [(calendar, count) for calendar, count in session.execute(
        sa.select(refused_by, sa.func.count()).join(Room, Room.id == GoogleCall.room_id, isouter=True)
        .where(GoogleCall.outcome == REFUSED, window).group_by(refused_by).order_by(sa.func.count().desc()).limit(top))]
    # A room's calls carry its room id; only a calendar we know no room of keeps its address.
    non_room = session.scalar(sa.select(sa.func.count()).select_from(GoogleCall)
                              .where(window, GoogleCall.room_id.is_(None), GoogleCall.calendar_id.is_not(None),
                                     GoogleCall.calendar_id.not_like(f"%{ROOM_CALENDAR_SUFFIX}"),
                                     GoogleCall.outcome != REFUSED)) or 0
    in_scope = session.scalar(sa.select(sa.func.count()).select_from(Room).where(Room.in_scope.is_(True))) or 0
    return Summary(since=since, total=sum(by_outcome.values()), by_outcome=by_outcome, by_kind=by_kind,
                   by_operation=by_operation, top_rooms=top_rooms, refused=by_outcome.get(REFUSED, 0),
                   refused_calendars=refused_calendars, non_room_calls=non_room, rooms_in_scope=in_scope,
                   rooms_called=len(per_room))

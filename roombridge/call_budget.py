"""One budget of Google Calendar calls, shared by every process on every host.

Google counts Calendar calls per user per project in a sliding minute (600) and per project
(10,000), and Roombridge acts as ONE user for the whole organisation. So every call of every
web process, worker and CLI takes from one budget kept in Redis, GOOGLE_CALLS_PER_MINUTE,
set below Google's quota to leave headroom.

The limiter is GCRA (the generic cell rate algorithm: a token bucket kept as one timestamp,
the "theoretical arrival time") in one Lua script, on Redis' clock, so hosts whose clocks
disagree still share one bucket. The bucket holds `burst` tokens and refills at
``calls_per_minute - burst`` a minute; any sliding minute then holds at most
``burst + (calls_per_minute - burst) = calls_per_minute`` calls, as Google counts them.

Kinds, by priority (a kind must leave its reserve in the bucket):

- ``write``: a person waits for "confirmed" (booking writes, the admin's access check); may
  take the last token, and waits up to 10 s for one.
- ``sync``: a push-driven sync; leaves the writes' reserve, and waits up to 5 s.
- ``sweep`` (safety-net sync) and ``renewal`` (channel creation and renewal): leave the
  reserves of writes and syncs, and wait at most 1 s, then give up: `OverBudget` says when to
  come back and the job is re-queued.

When Google answers a rate limit anyway (403 rateLimitExceeded or userRateLimitExceeded,
429), `pause_after` sets a shared pause that every process honours before its next call:
truncated exponential (GOOGLE_RETRY_BASE_SECONDS doubling, at most 32 s) with jitter, longer
for each rate limit answered within a minute of the previous pause, instead of each worker's
own retry storm. Answers to calls already in flight when the pause began do not lengthen it.

Counters per kind per minute (granted, refused because exhausted, refused because paused)
and the last rate-limit answers stay in Redis for an hour, for `usage()`: the CLI's
``google usage`` and, later, the admin console.

Redis down: writes fail open (a person is waiting; Google's own quota still protects Google,
and a rate-limit answer is retried with the gateway's local backoff), every other kind fails
closed with `OverBudget` (reason ``budgetUnavailable``): without the shared budget, workers
on several hosts could together overrun the quota, and their jobs are retried anyway. That
choice is the gateway's (roombridge/gcal.py); here a Redis error simply propagates.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

from redis import Redis

from roombridge.queue import LuaScript

KINDS = ("write", "sync", "sweep", "renewal")
# How long a caller of each kind waits for a token (seconds of Redis' clock) before giving up.
MAX_WAIT_SECONDS = {"write": 10.0, "sync": 5.0, "sweep": 1.0, "renewal": 1.0}
PAUSE_CAP_SECONDS = 32.0
# A rate-limit answer within this long after a pause ended doubles the next pause.
PAUSE_MEMORY_SECONDS = 60
COUNTS_TTL_SECONDS = 3600
RATE_LIMITS_KEPT = 50

KEY_PREFIX = "roombridge:google"
TAT_KEY = f"{KEY_PREFIX}:budget:tat"
PAUSE_KEY = f"{KEY_PREFIX}:budget:pause"
PAUSE_LEVEL_KEY = f"{KEY_PREFIX}:budget:pause-level"
COUNTS_KEY_PREFIX = f"{KEY_PREFIX}:calls:"  # + the minute (Redis clock, seconds // 60)
RATE_LIMITS_KEY = f"{KEY_PREFIX}:rate-limited"
# Calls the gateway refused before any request, for a calendar not an in-scope room: zero expected.
ALLOWLIST_REFUSED_KEY = f"{KEY_PREFIX}:refused-by-allowlist"

# KEYS: tat, pause, counts prefix. ARGV: emission interval (s), how far the TAT may run ahead of
# now after this call (s), kind. Returns {granted 0|1, wait (s), now (s), verdict}; numbers as
# strings, since Redis truncates Lua numbers to integers.
_TAKE = LuaScript(f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local counts = KEYS[3] .. math.floor(now / 60)
local function fmt(x) return string.format('%.6f', x) end
local function count(field)
  redis.call('HINCRBY', counts, field, 1)
  redis.call('EXPIRE', counts, {COUNTS_TTL_SECONDS})
end
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then
  count(ARGV[3] .. ':paused')
  return {{0, fmt(pause - now), fmt(now), 'paused'}}
end
-- The debt: how far the theoretical arrival time runs ahead of now, in seconds.
local debt = math.max(tonumber(redis.call('GET', KEYS[1]) or '0') - now, 0) + tonumber(ARGV[1])
local wait = debt - tonumber(ARGV[2])
if wait > 0 then
  count(ARGV[3] .. ':exhausted')
  return {{0, fmt(wait), fmt(now), 'exhausted'}}
end
redis.call('SET', KEYS[1], fmt(now + debt), 'PX', math.ceil(debt * 1000) + 1000)
count(ARGV[3])
return {{1, '0', fmt(now), 'granted'}}
""")

# KEYS: pause, pause level, rate-limit log. ARGV: base (s), cap (s), jitter in [0, 1), the answer
# as JSON. Returns {pause left (s), level, 1 if this answer started the pause}.
_PAUSE = LuaScript(f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local answer = cjson.decode(ARGV[4])
answer['at'] = now
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local level = tonumber(redis.call('GET', KEYS[2]) or '0')
local started = 0
if current <= now then
  level = level + 1
  local length = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) * 2 ^ (level - 1))
  length = length / 2 + length / 2 * tonumber(ARGV[3])
  current = now + length
  redis.call('SET', KEYS[1], string.format('%.6f', current), 'PX', math.ceil(length * 1000))
  redis.call('SET', KEYS[2], level, 'EX', math.ceil(length) + {PAUSE_MEMORY_SECONDS})
  started = 1
end
answer['pause_seconds'] = current - now
redis.call('LPUSH', KEYS[3], cjson.encode(answer))
redis.call('LTRIM', KEYS[3], 0, {RATE_LIMITS_KEPT - 1})
redis.call('EXPIRE', KEYS[3], {COUNTS_TTL_SECONDS})
return {{string.format('%.6f', current - now), level, started}}
""")


@dataclass(frozen=True)
class Decision:
    """The budget's answer to one call of `kind`."""

    granted: bool
    kind: str
    verdict: str  # granted, exhausted (no token this kind may take), paused (a shared pause is on)
    retry_after: float  # seconds until a token of this kind may be free (0 when granted)
    now: float  # Redis' clock when it answered


class OverBudget(Exception):
    """No call now: come back after `retry_after` seconds."""

    def __init__(self, decision: Decision):
        super().__init__(f"{decision.kind} call refused: budget {decision.verdict}; "
                         f"retry in {decision.retry_after:.1f}s")
        self.decision = decision


@dataclass(frozen=True)
class RateLimitAnswer:
    at: float  # Redis' clock
    kind: str
    status: int | None
    reason: str | None
    what: str
    pause_seconds: float  # the pause left when it was answered


@dataclass(frozen=True)
class MinuteUsage:
    minute: int  # Redis' clock, seconds // 60
    granted: dict[str, int]
    refused: dict[str, int]  # exhausted or paused

    @property
    def total(self) -> int:
        return sum(self.granted.values())


@dataclass(frozen=True)
class Usage:
    """What the CLI and the console show: the budget, its use per minute, the pause, Google's last rate limits."""

    calls_per_minute: int
    burst: int
    reserves: dict[str, int]
    tokens_left: float
    pause_left: float  # seconds; 0 when not paused
    pause_level: int
    minutes: list[MinuteUsage]  # oldest first, the current (partial) minute last
    rate_limits: list[RateLimitAnswer]  # newest first
    refused_by_allowlist: int = 0  # ever (since Redis was last emptied)
    last_refused_calendar: str | None = None


class CallBudget:
    """The shared bucket. `period` is Google's minute; tests shrink it to see several windows quickly."""

    def __init__(self, conn: Redis, calls_per_minute: int, *, pause_base: float = 0.5, period: float = 60.0):
        if calls_per_minute < 10:
            raise ValueError("GOOGLE_CALLS_PER_MINUTE must be at least 10")
        self.conn = conn
        self.calls_per_minute = calls_per_minute
        self.pause_base = pause_base
        self.burst = max(3, calls_per_minute // 20)
        # The bucket refills at the budget less the burst, so burst + refill never exceed it in a window.
        self.interval = period / (calls_per_minute - self.burst)
        write_share = max(1, self.burst * 2 // 5)
        sync_share = max(1, self.burst // 5)
        # Tokens each kind must leave in the bucket.
        self.reserves = {"write": 0, "sync": write_share, "sweep": write_share + sync_share,
                         "renewal": write_share + sync_share}

    def take(self, kind: str) -> Decision:
        """One try, no waiting: a token of `kind`, or how long until one may be free."""
        if kind not in self.reserves:
            raise ValueError(f"unknown call kind {kind!r}")
        # After this call the TAT may run at most (burst - reserve) intervals ahead of now.
        ahead = (self.burst - self.reserves[kind]) * self.interval
        granted, wait, now, verdict = _TAKE(self.conn, keys=(TAT_KEY, PAUSE_KEY, COUNTS_KEY_PREFIX),
                                            args=(repr(self.interval), repr(ahead), kind))
        return Decision(bool(granted), kind, _text(verdict), max(0.0, float(wait)), float(now))

    def acquire(self, kind: str, max_wait: float | None = None) -> Decision:
        """A token of `kind`, waiting at most `max_wait` seconds of Redis' clock (default: the kind's).

        Gives up at once, without sleeping, when the wait would not fit in what is left.
        """
        max_wait = MAX_WAIT_SECONDS[kind] if max_wait is None else max_wait
        deadline = None
        while True:
            decision = self.take(kind)
            if decision.granted:
                return decision
            deadline = decision.now + max_wait if deadline is None else deadline
            if decision.retry_after > deadline - decision.now:
                return decision
            # A little jitter: waiters woken together do not all ask in the same millisecond.
            time.sleep(decision.retry_after + random.uniform(0, 0.01))

    def pause_after(self, kind: str, status: int | None, reason: str | None, what: str) -> float:
        """Google answered a rate limit: pause every process; returns the seconds of pause left."""
        answer = json.dumps({"kind": kind, "status": status, "reason": reason, "what": what[:200]})
        left, _level, _started = _PAUSE(self.conn, keys=(PAUSE_KEY, PAUSE_LEVEL_KEY, RATE_LIMITS_KEY),
                                        args=(repr(self.pause_base), repr(PAUSE_CAP_SECONDS), repr(random.random()),
                                              answer))
        return float(left)

    def usage(self, minutes: int = 10) -> Usage:
        """The budget's state now and its use over the last `minutes` minutes (Redis' clock)."""
        seconds, micros = self.conn.time()
        now = seconds + micros / 1e6
        current = int(now // 60)
        wanted = list(range(current - minutes + 1, current + 1))
        pipe = self.conn.pipeline(transaction=False)
        pipe.get(TAT_KEY)
        pipe.get(PAUSE_KEY)
        pipe.get(PAUSE_LEVEL_KEY)
        pipe.lrange(RATE_LIMITS_KEY, 0, -1)
        pipe.hmget(ALLOWLIST_REFUSED_KEY, "count", "last")
        for minute in wanted:
            pipe.hgetall(f"{COUNTS_KEY_PREFIX}{minute}")
        tat, pause, level, answers, (refused, last_refused), *counts = pipe.execute()
        ahead = max(0.0, float(tat or 0) - now)
        return Usage(
            calls_per_minute=self.calls_per_minute,
            burst=self.burst,
            reserves=dict(self.reserves),
            tokens_left=max(0.0, self.burst - ahead / self.interval),
            pause_left=max(0.0, float(pause or 0) - now),
            pause_level=int(level or 0),
            minutes=[_minute_usage(minute, raw) for minute, raw in zip(wanted, counts, strict=True)],
            rate_limits=[_rate_limit_answer(raw) for raw in answers],
            refused_by_allowlist=int(refused or 0),
            last_refused_calendar=_text(last_refused) if last_refused else None,
        )

    def count_allowlist_refusal(self, calendar_id: str) -> None:
        """The gateway refused a call for `calendar_id` (not an in-scope room): count it for the console."""
        pipe = self.conn.pipeline(transaction=False)
        pipe.hincrby(ALLOWLIST_REFUSED_KEY, "count", 1)
        pipe.hset(ALLOWLIST_REFUSED_KEY, "last", calendar_id[:254])
        pipe.execute()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _minute_usage(minute: int, raw: dict) -> MinuteUsage:
    granted = dict.fromkeys(KINDS, 0)
    refused = dict.fromkeys(KINDS, 0)
    for field, value in raw.items():
        kind, _, verdict = _text(field).partition(":")
        if kind in granted:
            (refused if verdict else granted)[kind] += int(value)
    return MinuteUsage(minute, granted, refused)


def _rate_limit_answer(raw: bytes) -> RateLimitAnswer:
    data = json.loads(raw)
    return RateLimitAnswer(at=float(data["at"]), kind=data.get("kind", "?"), status=data.get("status"),
                           reason=data.get("reason"), what=data.get("what", ""),
                           pause_seconds=float(data.get("pause_seconds", 0)))

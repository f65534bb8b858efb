"""Notifications: what Google sends us about a room calendar, and how it becomes a sync request.

The inbound path in one place. Google pushes a notification to the webhook
(webhooks/google_calendar.py) for each change on a watched calendar; `take_push` checks it
against the channel's entry in Redis, counts it and sets the room's ``queued`` marker in ONE
Redis call, without the database; when the marker was not set yet it announces
`SyncRequested`, which jobs/sync.py turns into the room's sync job (roombridge/sync.py lists
the changes, roombridge/mirror.py writes them to the reservation rows).

This module owns every Redis key of that path and the Lua scripts that read them:

- ``roombridge:channel:<id>``: what the webhook knows of a channel (token digest, resource id,
  room, expiry, stopped) and the pushes counted on it since the room's last sync;
- ``roombridge:unknown-channel:<id>``: a channel id the database did not know, for a minute;
- ``roombridge:pushes:<minute>``: pushes per minute, for "pushes in the last hour";
- ``roombridge:sync:{queued,full,started,lock}:<room>``: asking for a room's sync, coalesced.

Asking for a sync (`request_sync`, also used by the safety net, the admin and the CLI):

- ``queued``: ``SET NX``; only the request that sets it has the sync job enqueued. Many
  pushes while a job waits in the queue enqueue nothing more.
- ``full``: a separate flag, so a full-sync request is never swallowed by an incremental
  job already queued; the job reads and clears it.
- The job takes the room's lock, then waits until SYNC_MIN_INTERVAL_SECONDS have passed
  since the previous sync of the room *started*, then deletes ``queued`` (`take_turn`), then
  lists. A push after that delete enqueues exactly one follow-up, and a push before it is
  covered by the listing that follows. So a burst of pushes gives at most one sync per
  interval, and no change is missed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from redis import Redis
from sqlalchemy.orm import Session

from roombridge.models import WatchChannel
from roombridge.queue import LuaScript
from roombridge.queue import redis as app_redis
from roombridge.unit_of_work import SyncRequested, dispatch, unit_of_work

log = logging.getLogger(__name__)

SYNC_KEY_PREFIX = "roombridge:sync"
# A queued marker outlives any sane queue wait; if its job is lost it expires and the next
# request enqueues again (the safety net makes one such request per interval).
QUEUED_TTL_SECONDS = 600
PUSH_BUCKET_KEY = "roombridge:pushes:{minute}"
PUSH_BUCKET_TTL_SECONDS = 2 * 3600


def sync_key(kind: str, room_id: int) -> str:
    """A room's coalescing key: ``queued``, ``full``, ``started`` or ``lock``."""
    return f"{SYNC_KEY_PREFIX}:{kind}:{room_id}"


# --- what the push receiver knows of each channel, kept in Redis -------------------------------
#
# The webhook checks a push and requests the room's sync in ONE Redis call, without the
# database (`take_push`, below): a burst of pushes costs the database nothing,
# and pushes are still taken in while the database is down (the syncs they request wait for
# it, retried by RQ, and the safety-net sync follows). The channel lifecycle (roombridge/channels.py) writes a channel's
# entry after committing its row. An entry that is missing (Redis restarted empty, or a write
# here failed) is filled from the database by the webhook on the channel's next push; one
# that is stale can only say "live" for a channel stopped meanwhile, which costs a harmless
# extra sync until the entry expires a day after the channel.
#
# The channel's pushes are counted in the same hash; every sync of the room adds them to the
# channel's row (absorb_push_stats), so the row is at most one sync behind.

CHANNEL_KEY = "roombridge:channel:{id}"
# A channel id the database did not know, remembered briefly: a flood of pushes naming it costs
# one database read, not one each. Our ids are fresh UUIDs, unknown before their channel exists.
UNKNOWN_CHANNEL_KEY = "roombridge:unknown-channel:{id}"
UNKNOWN_CHANNEL_TTL_SECONDS = 60
CHANNEL_ENTRY_OUTLIVES_EXPIRY = timedelta(days=1)
RECENTLY_STOPPED = timedelta(days=1)  # pushes counted before a stop are still absorbed


def channel_key(channel_id: str) -> str:
    return CHANNEL_KEY.format(id=channel_id)


def unknown_channel_key(channel_id: str) -> str:
    return UNKNOWN_CHANNEL_KEY.format(id=channel_id)


def remember_unknown_channel(redis: Redis, channel_id: str) -> None:
    """The database has no such channel: refuse its pushes from Redis alone for a while."""
    redis.set(unknown_channel_key(channel_id), 1, ex=UNKNOWN_CHANNEL_TTL_SECONDS)


def token_digest(token: str) -> str:
    """The channel token as its Redis entry keeps it, and as a push's token is compared with it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def cache_channel(redis: Redis, channel: WatchChannel) -> None:
    """Write what the webhook needs to check pushes on `channel` (its row must be committed)."""
    key = channel_key(channel.id)
    pipe = redis.pipeline(transaction=True)
    pipe.hset(key, mapping={
        "token": token_digest(channel.token),
        "resource_id": channel.resource_id or "",  # learnt from the watch answer; "" checks nothing yet
        "room_id": channel.room_id,
        "expires": f"{channel.expiration.timestamp():.3f}" if channel.expiration else "",
        "stopped": 1 if channel.stopped_at else 0,
    })
    if channel.last_message_number is not None:
        # After Redis restarted empty: the highest number the row saw, so its replays stay refused.
        pipe.hsetnx(key, "last_message_number", str(channel.last_message_number))
    pipe.delete(unknown_channel_key(channel.id))
    lasts_from = channel.expiration or channel.created_at
    if lasts_from is not None:
        pipe.expireat(key, lasts_from + CHANNEL_ENTRY_OUTLIVES_EXPIRY)
    else:
        pipe.expire(key, CHANNEL_ENTRY_OUTLIVES_EXPIRY)
    pipe.execute()


def cache_channel_quietly(channel: WatchChannel) -> None:
    # The row is the truth and is committed; the webhook refills a missing entry from it.
    try:
        cache_channel(app_redis(), channel)
    except Exception:
        log.warning("could not cache channel %s for the webhook; its next push reads the database",
                    channel.id, exc_info=True)


def forget_channel_quietly(channel_id: str) -> None:
    try:
        app_redis().delete(channel_key(channel_id))
    except Exception:
        log.warning("could not drop the cached channel %s; it expires by itself", channel_id, exc_info=True)


# Read the pushes counted since the last absorb and take them off, atomically, so that pushes
# arriving meanwhile are counted next time and none twice.
_TAKE_PUSHES = LuaScript("""
local v = redis.call('HMGET', KEYS[1], 'pushes', 'last_push_at', 'last_message_number')
local n = tonumber(v[1] or '0') or 0
if n > 0 then redis.call('HINCRBY', KEYS[1], 'pushes', -n) end
return {n, v[2] or '', v[3] or ''}
""")


@dataclass(frozen=True)
class PendingPushes:
    """Pushes on one channel counted in Redis and not yet added to its row."""
    count: int
    last_push_at: datetime | None
    last_message_number: int | None


def _pending(count, last_at, number) -> PendingPushes:
    return PendingPushes(int(count or 0), datetime.fromtimestamp(float(last_at), UTC) if last_at else None,
                         int(number) if number else None)


def absorb_push_stats(session: Session, redis: Redis, room_id: int, now: datetime) -> int:
    """Add the pushes counted in Redis to the rows of the room's channels; returns how many.

    Called by the room's sync (under its lock). If the database write fails the counts are put
    back, so they are added by the next sync instead of being lost.
    """
    with unit_of_work(session, write=False):
        ids = list(session.scalars(sa.select(WatchChannel.id).where(
            WatchChannel.room_id == room_id,
            sa.or_(WatchChannel.stopped_at.is_(None), WatchChannel.stopped_at > now - RECENTLY_STOPPED))))
    taken = {channel_id: _pending(*_TAKE_PUSHES(redis, keys=(channel_key(channel_id),))) for channel_id in ids}
    taken = {channel_id: p for channel_id, p in taken.items() if p.count}
    if not taken:
        return 0
    try:
        with unit_of_work(session):
            for channel_id, pending in taken.items():
                values: dict = {"push_count": WatchChannel.push_count + pending.count}
                if pending.last_push_at is not None:
                    values.update(last_push_at=pending.last_push_at,
                                  last_message_number=pending.last_message_number)
                session.execute(sa.update(WatchChannel).where(WatchChannel.id == channel_id).values(**values)
                                .execution_options(synchronize_session=False))
    except Exception:
        pipe = redis.pipeline(transaction=False)
        for channel_id, pending in taken.items():
            pipe.hincrby(channel_key(channel_id), "pushes", pending.count)
        pipe.execute()
        raise
    return sum(p.count for p in taken.values())


def pending_pushes(redis: Redis, channel_ids: list[str]) -> dict[str, PendingPushes]:
    """What Redis has counted on these channels since the last absorb (one round trip)."""
    pipe = redis.pipeline(transaction=False)
    for channel_id in channel_ids:
        pipe.hmget(channel_key(channel_id), "pushes", "last_push_at", "last_message_number")
    return {channel_id: _pending(*values) for channel_id, values in zip(channel_ids, pipe.execute(), strict=True)}


# --- pushes per minute, for "pushes in the last hour" ------------------------------------------


def _minute(now: datetime) -> int:
    return int(now.timestamp() // 60)


def push_bucket_key(now: datetime) -> str:
    """The counter of pushes taken in `now`'s minute (counted by `take_push`)."""
    return PUSH_BUCKET_KEY.format(minute=_minute(now))


def pushes_in_last_hour(redis, now: datetime) -> int:
    last = _minute(now)
    keys = [PUSH_BUCKET_KEY.format(minute=m) for m in range(last - 59, last + 1)]
    return sum(int(v) for v in redis.mget(keys) if v is not None)


# --- asking for a sync ----------------------------------------------------------------------------


def request_sync(room_id: int, full: bool = False) -> bool:
    """Ask for a sync of the room; True if a job was enqueued, False if one already waits.

    Raises redis errors when Redis is unreachable.
    """
    conn = app_redis()
    pipe = conn.pipeline(transaction=False)
    if full:
        pipe.set(sync_key("full", room_id), 1, ex=QUEUED_TTL_SECONDS)
    pipe.set(sync_key("queued", room_id), 1, nx=True, ex=QUEUED_TTL_SECONDS)
    if not pipe.execute()[-1]:
        return False
    _enqueue_marked(conn, room_id)
    return True


def _enqueue_marked(conn: Redis, room_id: int) -> None:
    """Have the sync whose ``queued`` marker the caller has just set enqueued (by jobs/sync.py)."""
    try:
        dispatch(SyncRequested(room_id))
    except Exception:
        # Not enqueued: let the next request try again instead of waiting for the marker to expire.
        try:
            conn.delete(sync_key("queued", room_id))
        except Exception:
            log.warning("could not clear the queued marker of room %s; it expires by itself", room_id)
        raise


# --- a push notification: check it and ask for the sync, in one Redis call ------------------------

# KEYS: the channel's entry (above), this minute's push counter, the channel's "unknown" mark.
# ARGV: the push's token digest, its resource id, now (epoch seconds), its message number or ""
# (decimal digits without leading zeros, compared as strings: Lua's numbers are doubles).
# Answers one integer: room id * 2 + 1 if the room's queued marker was set by this push (the
# caller enqueues the job), room id * 2 if a sync already waited; or a refusal code below.
# The marker's key is built here from the entry's room id: fine on one Redis server (ours);
# a Redis Cluster would want it declared in KEYS.
#
# A message number at or below the highest the channel has seen is a replay (Google's numbers
# increase on a channel): acknowledged, and nothing counted or requested. A lower number that is
# only late, not replayed, needs nothing either: the sync the higher one requested lists its change.
#
# The token is compared as SHA-256 digests with plain equality: what its timing can leak is
# how many leading bytes of the two digests agree, which tells nothing about the token itself
# (finding a token for a known digest is a preimage attack). A constant-time loop in Lua
# doubled the script's run time on the Redis server for no added safety.
_UNKNOWN, _WRONG_TOKEN, _WRONG_RESOURCE, _STOPPED, _REPLAYED, _KNOWN_UNKNOWN = -1, -2, -3, -4, -5, -6
_VERDICTS = {_UNKNOWN: "unknown", _WRONG_TOKEN: "wrong token", _WRONG_RESOURCE: "wrong resource",
             _STOPPED: "stopped", _REPLAYED: "replayed", _KNOWN_UNKNOWN: "known unknown"}
_TAKE_PUSH = LuaScript(f"""
local c = redis.call('HMGET', KEYS[1], 'token', 'resource_id', 'room_id', 'expires', 'stopped', 'last_message_number')
if not c[1] then
  if redis.call('EXISTS', KEYS[3]) == 1 then return {_KNOWN_UNKNOWN} end
  return {_UNKNOWN}
end
if c[1] ~= ARGV[1] then return {_WRONG_TOKEN} end
if c[2] ~= '' and c[2] ~= ARGV[2] then return {_WRONG_RESOURCE} end
if c[5] == '1' or (c[4] ~= '' and tonumber(c[4]) <= tonumber(ARGV[3])) then return {_STOPPED} end
local n = ARGV[4]
if n ~= '' and c[6] and (#n < #c[6] or (#n == #c[6] and n <= c[6])) then return {_REPLAYED} end
redis.call('HINCRBY', KEYS[1], 'pushes', 1)
if n ~= '' then
  redis.call('HSET', KEYS[1], 'last_push_at', ARGV[3], 'last_message_number', n)
else
  redis.call('HSET', KEYS[1], 'last_push_at', ARGV[3])
end
if redis.call('INCR', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], {PUSH_BUCKET_TTL_SECONDS}) end
local marked = redis.call('SET', '{SYNC_KEY_PREFIX}:queued:' .. c[3], 1, 'NX', 'EX', {QUEUED_TTL_SECONDS})
return tonumber(c[3]) * 2 + (marked and 1 or 0)
""")


@dataclass(frozen=True)
class PushTaken:
    """What `take_push` made of a push."""
    # "accepted", "unknown" (no entry in Redis), "known unknown" (the database had no such channel a
    # moment ago), "wrong token", "wrong resource", "stopped", "replayed" (a message number already seen)
    verdict: str
    room_id: int | None = None
    enqueued: bool = False  # a sync job was enqueued (False: one already waited)


def take_push(conn: Redis, channel_id: str, token: str, resource_id: str, number: int | None,
              now: datetime) -> PushTaken:
    """Check a change push against the channel's entry in Redis; if it holds, count it and ask for a sync.

    One Redis round trip (plus the enqueue when no sync of the room was waiting). "unknown"
    means the channel has no entry: the caller checks the database and calls `cache_channel`.
    Raises redis errors when Redis is unreachable.
    """
    stamp = now.timestamp()
    answer = _TAKE_PUSH(conn, keys=(channel_key(channel_id), push_bucket_key(now), unknown_channel_key(channel_id)),
                        args=(token_digest(token), resource_id, f"{stamp:.6f}",
                              "" if number is None else str(number)))
    if answer < 0:
        return PushTaken(_VERDICTS[answer])
    room_id, marked = divmod(answer, 2)
    if marked:
        _enqueue_marked(conn, room_id)
    return PushTaken("accepted", room_id, enqueued=bool(marked))


# --- the sync job's turn (jobs/sync.py) ---------------------------------------------------------



def _redis_now(conn: Redis) -> float:
    # Redis' clock, not this host's: workers on several hosts agree on it.
    seconds, micros = conn.time()
    return seconds + micros / 1e6


def take_turn(conn: Redis, room_id: int, min_interval: float, full: bool) -> bool:
    """Pace and coalesce (see the module docstring); returns whether this sync must be full.

    Sleeps until `min_interval` has passed since the previous sync of the room started, then
    clears the room's ``queued`` marker: from here on any request enqueues one follow-up, as
    its change may come after our listing.
    """
    started = conn.get(sync_key("started", room_id))
    if started is not None:
        delay = float(started) + min_interval - _redis_now(conn)
        if delay > 0:
            time.sleep(delay)
    conn.set(sync_key("started", room_id), repr(_redis_now(conn)), ex=max(60, int(min_interval * 10)))
    conn.delete(sync_key("queued", room_id))
    return bool(conn.getdel(sync_key("full", room_id))) or full


def keep_full_request(conn: Redis, room_id: int) -> None:
    """A full sync failed: its retry must still be a full sync."""
    conn.set(sync_key("full", room_id), 1, ex=QUEUED_TTL_SECONDS)

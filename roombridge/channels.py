"""Watch channels: one live events.watch channel per in-scope room, replaced before it lapses.

Google has no renewal call: a channel is replaced by a new one with a new id, then the old
one is stopped (channels.stop). The new channel is saved before the old one is stopped, so
there is a short overlap in which a change is reported twice (the sync is idempotent), and
never a gap in which it is not reported at all. A stop that fails is kept as `stop_pending`
and retried by the periodic job; it never blocks the new channel.

Renewal is driven by each channel's real expiration, as Google answered it (it may cap the
ttl we ask for). Each channel renews at its own moment inside its renewal window, chosen by
hashing its id, so that thousands of rooms whose channels were made in the same minute do not
all renew in the same minute again. Opening a channel announces `ChannelOpened` with that
moment, and jobs/ schedules the channel's own renewal job for it (`renew_channel`, keyed by the
channel): renewal does not depend on the scheduler's tick being short against the channel's
life, which Google may cap well below what we asked. The periodic pass (`renew_due`) is the
safety net: it opens channels for rooms that have none, renews what a lost scheduled job left
due, and stops superseded channels. Every moment lies a safety margin before expiry.

Both paths tend a room under its renewal lock in Redis, and read the room's channels afresh
under it: two workers never replace one channel twice, and the pass never stops a channel
that another worker has just opened.

Functions here take the session, the gateway and `now`; they never read the clock, so tests
(and the hour of simulated time) drive them with the emulator's clock. Those that call Google
open their own short units of work around it (roombridge/unit_of_work.py), never one across
the call, and refuse to run inside a caller's unit.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from roombridge import notifications
from roombridge.config import CALENDAR_EVENTS_SCOPE, Config
from roombridge.gcal import CalendarGateway, CalendarNotInScope, GoogleError, OverBudget, PermanentGoogleError
from roombridge.models import Room, RoomHealth, WatchChannel, audit
from roombridge.queue import RedisLock
from roombridge.queue import redis as app_redis
from roombridge.unit_of_work import ChannelOpened, after_commit, announce, outside_units, unit_of_work

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/google/calendar"
# A channel whose stop keeps failing is given up on after this long past its expiry: Google
# no longer delivers on an expired channel, so there is nothing left to stop.
GIVE_UP_STOPPING_AFTER = timedelta(days=1)
RENEWAL_LOCK_KEY = "roombridge:channels:renewing:{room_id}"
RENEWAL_LOCK_TTL_SECONDS = 30.0  # renewed by a heartbeat while held; frees itself if the worker dies


class ChannelRefused(Exception):
    """Google refused to create a channel on a room calendar; the room is marked unhealthy."""


def webhook_address(config: Config) -> str:
    return config.WEBHOOK_BASE_URL.rstrip("/") + WEBHOOK_PATH


# --- renewal decisions (pure) ---------------------------------------------------------------


def renewal_window(channel: WatchChannel, config: Config) -> tuple[datetime, datetime]:
    """[earliest, latest] moment at which this channel should be replaced.

    The window is CHANNEL_RENEW_WITHIN_SECONDS before expiry, but never more than half the
    channel's lifetime (a channel capped to a few minutes must live a while before renewal).
    The latest moment keeps a margin of three scheduler ticks before expiry, capped to half
    the window, so that a renewal run missed or delayed still leaves time for the next one.
    """
    expiration = channel.expiration
    born = channel.created_at or expiration - timedelta(seconds=config.CHANNEL_TTL_SECONDS)
    lifetime = max(expiration - born, timedelta(0))
    window = min(timedelta(seconds=config.CHANNEL_RENEW_WITHIN_SECONDS), lifetime / 2)
    margin = min(timedelta(seconds=3 * config.SCHEDULER_TICK_SECONDS), window / 2)
    return expiration - window, expiration - margin


def renewal_moment(channel: WatchChannel, config: Config) -> datetime:
    """The channel's own moment in its window, fixed by a hash of its id: spread, yet stable."""
    earliest, latest = renewal_window(channel, config)
    fraction = int.from_bytes(hashlib.sha256(channel.id.encode()).digest()[:8], "big") / 2**64
    return earliest + (latest - earliest) * fraction


def is_due(channel: WatchChannel, now: datetime, config: Config) -> bool:
    if channel.expiration is None:
        return True  # we never learnt Google's expiry: replace it rather than guess
    return now >= renewal_moment(channel, config)


# --- queries -------------------------------------------------------------------------------


def open_channels(session: Session, room_id: int | None = None) -> list[WatchChannel]:
    """Channels not yet stopped, newest first (expired ones included: they still need a stop).

    Read afresh (populate_existing): another worker may have renewed or stopped channels that
    this session loaded earlier.
    """
    query = sa.select(WatchChannel).where(WatchChannel.stopped_at.is_(None))
    if room_id is not None:
        query = query.where(WatchChannel.room_id == room_id)
    query = query.order_by(WatchChannel.created_at.desc(), WatchChannel.id)
    return list(session.scalars(query, execution_options={"populate_existing": True}))


def current_channel(session: Session, room: Room, now: datetime) -> WatchChannel | None:
    """The room's live channel that expires last: the one the next renewal replaces."""
    return _newest_live(open_channels(session, room.id), now)


def _newest_live(channels: list[WatchChannel], now: datetime) -> WatchChannel | None:
    live = [c for c in channels if c.is_live(now)]
    return max(live, key=lambda c: c.expiration or now, default=None)


@dataclass
class RenewalReport:
    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    stop_failed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # room calendar id -> reason
    retry_later: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # room calendar id -> an error of ours (database, ...)
    deferred: int = 0  # rooms and stops left to the next pass: the budget's renewal share was spent

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}


# --- lifecycle -----------------------------------------------------------------------------


def create_channel(session: Session, gateway: CalendarGateway, room: Room, config: Config, now: datetime,
                   actor: str = "system") -> WatchChannel:
    """Open a new channel on the room's calendar and save it with Google's own expiration.

    A permanent refusal (calendar no longer shared, ...) marks the room unhealthy with
    Google's reason and raises ChannelRefused; a retriable error propagates unchanged.
    """
    outside_units(session)
    # Saved before the watch call: Google sends the "sync" handshake at once, possibly before
    # its answer reaches us, and the webhook must know the channel (and its token) by then.
    channel = WatchChannel(id=str(uuid.uuid4()), room_id=room.id, token=secrets.token_urlsafe(32),
                           address=webhook_address(config), created_at=now)
    with unit_of_work(session):
        session.add(channel)
    try:
        result = gateway.watch(room.calendar_id, channel_id=channel.id, address=channel.address,
                               token=channel.token, ttl_seconds=config.CHANNEL_TTL_SECONDS)
    except BaseException as error:
        refused = isinstance(error, PermanentGoogleError) and not isinstance(error, CalendarNotInScope)
        with unit_of_work(session):
            session.delete(channel)  # never opened at Google: nothing to stop
            if refused:
                room.health = RoomHealth.CHANNEL_REFUSED
                room.health_error = f"Google refused a push channel: {error}"
                audit(session, actor, "channel.refused", room, reason=error.reason, status=error.status)
        notifications.forget_channel_quietly(channel.id)  # an early push may have cached it
        if refused:
            log.warning("watch refused for %s: %s", room.calendar_id, error)
            raise ChannelRefused(room.health_error) from error
        raise
    with unit_of_work(session):
        channel.resource_id, channel.expiration = result.resource_id, result.expiration
        if room.health == RoomHealth.CHANNEL_REFUSED:
            room.health, room.health_error = None, None
        audit(session, actor, "channel.created", channel, room=room.calendar_id,
              expiration=result.expiration.isoformat())
        after_commit(session, lambda: notifications.cache_channel_quietly(channel))
        announce(session, ChannelOpened(channel.id, renewal_moment(channel, config)))
    return channel


def stop_channel(session: Session, gateway: CalendarGateway, channel: WatchChannel, now: datetime,
                 actor: str = "system") -> bool:
    """channels.stop; True once stopped (or unknown to Google). Failure: stop_pending, retried later."""
    outside_units(session)
    try:
        gateway.stop_channel(channel.id, channel.resource_id or "", channel.room.calendar_id)
    except GoogleError as error:
        with unit_of_work(session):
            if channel.expiration is not None and now > channel.expiration + GIVE_UP_STOPPING_AFTER:
                # Long expired: Google delivers nothing on it any more, so there is nothing to stop.
                channel.stopped_at, channel.stop_pending = now, False
                channel.stop_error = f"gave up stopping after expiry: {error}"
                after_commit(session, lambda: notifications.cache_channel_quietly(channel))
                gave_up = True
            else:
                channel.stop_pending, channel.stop_error = True, str(error)
                gave_up = False
        if not gave_up:
            log.info("stopping channel %s failed, will retry: %s", channel.id, error)
        return gave_up
    with unit_of_work(session):
        channel.stopped_at, channel.stop_pending, channel.stop_error = now, False, None
        audit(session, actor, "channel.stopped", channel, room_id=channel.room_id)
        after_commit(session, lambda: notifications.cache_channel_quietly(channel))
    return True


def replace_channel(session: Session, gateway: CalendarGateway, channel: WatchChannel, config: Config,
                    now: datetime, actor: str = "system", report: RenewalReport | None = None) -> WatchChannel:
    """New channel saved first, then the old one stopped; a failed stop does not undo the new one."""
    report = report if report is not None else RenewalReport()
    new = create_channel(session, gateway, channel.room, config, now, actor=actor)
    report.replaced.append(channel.id)
    report.created.append(new.id)
    (report.stopped if stop_channel(session, gateway, channel, now, actor) else report.stop_failed).append(channel.id)
    return new


def renew_room(session: Session, gateway: CalendarGateway, room: Room, config: Config, now: datetime,
               actor: str = "system") -> WatchChannel:
    """Replace the room's channel now, whatever its expiry (the admin's "renew" button)."""
    channel = current_channel(session, room, now)
    if channel is None:
        return create_channel(session, gateway, room, config, now, actor)
    new = replace_channel(session, gateway, channel, config, now, actor)
    # Older channels still open (a stop that failed earlier) are superseded too.
    for old in open_channels(session, room.id):
        if old.id != new.id and not old.stop_pending:
            stop_channel(session, gateway, old, now, actor)
    return new


def stop_room_channels(session: Session, gateway: CalendarGateway, room: Room, now: datetime,
                       actor: str = "system") -> list[WatchChannel]:
    """Stop every open channel of the room; returns those whose stop must be retried."""
    return [c for c in open_channels(session, room.id) if not stop_channel(session, gateway, c, now, actor)]


@contextmanager
def renewal_lock(room_id: int) -> Iterator[bool]:
    """Hold the room's renewal lock for the block; yields False if another worker holds it.

    With Redis unreachable the block runs unlocked (yields True): a channel about to lapse
    matters more than a rare duplicate, which the next pass stops as superseded.
    """
    lock = RedisLock(app_redis(), RENEWAL_LOCK_KEY.format(room_id=room_id), RENEWAL_LOCK_TTL_SECONDS)
    try:
        held = lock.acquire()
    except RedisError:
        log.warning("no renewal lock for room %s (Redis unreachable); renewing without it", room_id)
        yield True
        return
    try:
        yield held
    finally:
        if held:
            lock.release()


def tend_room(session: Session, gateway: CalendarGateway, room: Room, config: Config, now: datetime,
              report: RenewalReport) -> WatchChannel | None:
    """Under the room's renewal lock: give the room a live channel, replace it if due, stop the superseded.

    Returns the room's current channel, or None when another worker is tending the room now.
    Errors propagate (a refusal as ChannelRefused), after whatever was done before them.
    """
    with renewal_lock(room.id) as held:
        if not held:
            return None
        with unit_of_work(session, write=False):
            open_ = open_channels(session, room.id)
        current = _newest_live(open_, now)
        if current is None:
            current = create_channel(session, gateway, room, config, now)
            report.created.append(current.id)
        elif is_due(current, now, config):
            current = replace_channel(session, gateway, current, config, now, report=report)
        for channel in open_:
            if channel.id == current.id or channel.stopped_at is not None:
                continue  # the current one, or stopped by replace_channel just now
            _stop_reporting(session, gateway, channel, now, report)
        return current


def _stop_reporting(session: Session, gateway: CalendarGateway, channel: WatchChannel, now: datetime,
                    report: RenewalReport) -> None:
    try:
        stopped = stop_channel(session, gateway, channel, now)
    except Exception:
        log.exception("stopping channel %s failed; the periodic pass tries again", channel.id)
        stopped = False
    (report.stopped if stopped else report.stop_failed).append(channel.id)


def renew_channel(session: Session, gateway: CalendarGateway, channel_id: str, config: Config,
                  now: datetime) -> datetime | None:
    """A channel's own renewal, scheduled at its moment when it opened (`ChannelOpened`).

    Replaces the channel if it is still its room's current one and due. Returns None when
    done (renewed, superseded meanwhile, stopped, room out of scope, another worker on it),
    or, run before its moment (clocks of two hosts disagree), the moment to run again.
    """
    outside_units(session)
    with unit_of_work(session, write=False):
        channel = session.get(WatchChannel, channel_id, populate_existing=True)
        room = channel.room if channel is not None else None
    if channel is None or channel.stopped_at is not None or not room.in_scope:
        return None
    if channel.expiration is not None and not is_due(channel, now, config):
        return renewal_moment(channel, config)
    report = RenewalReport()
    tend_room(session, gateway, room, config, now, report)
    if report.as_dict():
        log.info("renewal of channel %s: %s", channel_id, report.as_dict())
    return None


def renew_due(session: Session, gateway: CalendarGateway, config: Config, now: datetime) -> RenewalReport:
    """One renewal pass: the periodic safety net behind each channel's own scheduled renewal.

    - every in-scope room gets a channel if it has no live one (first channel, lapsed, refused before);
    - a room whose newest channel has reached its renewal moment gets a replacement;
    - superseded channels, channels of rooms out of scope and stops that failed are stopped.
    A failure on one room is recorded and the pass goes on with the others.
    """
    report = RenewalReport()
    with unit_of_work(session, write=False):
        rooms = list(session.scalars(sa.select(Room).where(Room.in_scope.is_(True)).order_by(Room.id)))
        # One query for every room's channels: the pass runs each scheduler tick, mostly finding nothing due.
        channels_by_room: dict[int, list[WatchChannel]] = defaultdict(list)
        for open_channel in open_channels(session):
            channels_by_room[open_channel.room_id].append(open_channel)
    # Each room in its own units of work: one room's failure, database errors included, never stops the others.
    # Once the budget refuses a renewal call, the rest waits for the next pass: renewals are paced by
    # what the budget leaves (roombridge/call_budget.py), spread over the passes, never a burst.
    spent = False
    for room in rooms:
        known = channels_by_room.pop(room.id, [])
        current = _newest_live(known, now)
        if current is not None and len(known) == 1 and not is_due(current, now, config):
            continue  # the common case: nothing to do, and no lock taken
        try:
            if spent:
                report.deferred += 1  # the budget refused a renewal call this pass: the next pass goes on
                continue
            tend_room(session, gateway, room, config, now, report)
        except ChannelRefused as refused:
            report.refused[room.calendar_id] = str(refused)
        except CalendarNotInScope:
            pass  # removed from scope meanwhile: its channels are stopped by the next pass
        except OverBudget:
            spent = True
            report.deferred += 1
        except GoogleError as error:
            report.retry_later[room.calendar_id] = str(error)
            log.warning("channel renewal for %s will be retried: %s", room.calendar_id, error)
        except Exception as error:
            report.failed[room.calendar_id] = str(error)
            log.exception("channel renewal for %s failed; the other rooms go on", room.calendar_id)
    # What is left: channels of rooms out of scope (no renewal of theirs can race with this).
    for leftovers in channels_by_room.values():
        for channel in leftovers:
            _stop_reporting(session, gateway, channel, now, report)
    return report


# --- the health summary at the top of the admin console -------------------------------------


@dataclass(frozen=True)
class IntegrationHealth:
    rooms_in_scope: int
    rooms_unhealthy: int
    rooms_without_channel: int
    channels_expiring_soon: int
    stops_pending: int
    pushes_last_hour: int
    mode: str  # "room" or "delegated"
    delegated_user: str | None
    scope: str

    @property
    def ok(self) -> bool:
        return not (self.rooms_unhealthy or self.rooms_without_channel)


def integration_health(session: Session, redis, config: Config, now: datetime) -> IntegrationHealth:
    rooms = list(session.scalars(sa.select(Room).where(Room.in_scope.is_(True))))
    open_ = [c for c in open_channels(session) if c.is_live(now)]
    watched = {c.room_id for c in open_}
    soon = now + timedelta(seconds=config.CHANNEL_RENEW_WITHIN_SECONDS)
    try:
        pushes = notifications.pushes_in_last_hour(redis, now)
    except Exception:  # Redis down: the console still shows what the database knows
        log.warning("could not read push counters", exc_info=True)
        pushes = -1
    stops_pending = session.scalar(
        sa.select(sa.func.count()).select_from(WatchChannel).where(WatchChannel.stop_pending.is_(True))
    )
    return IntegrationHealth(
        rooms_in_scope=len(rooms),
        rooms_unhealthy=sum(1 for r in rooms if r.health_error),
        rooms_without_channel=sum(1 for r in rooms if r.id not in watched),
        channels_expiring_soon=sum(1 for c in open_ if c.room_id in {r.id for r in rooms}
                                   and c.expiration is not None and c.expiration <= soon),
        stops_pending=stops_pending or 0,
        pushes_last_hour=pushes,
        mode="delegated" if config.delegated_mode else "room",
        delegated_user=config.GOOGLE_DELEGATED_USER or None,
        scope=CALENDAR_EVENTS_SCOPE,
    )

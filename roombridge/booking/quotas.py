"""Limits per person: what one person may hold, and how many invitation mails their bookings may cause.

The booking commands check these inside their unit of work; admins are exempt.

- MAX_LIVE_RESERVATIONS: reservations made here (not in Google) that a person organises and
  that have not ended;
- MAX_HOURS_PER_ROOM_PER_WEEK: a person's booked hours in one room in one week (Monday to
  Sunday in the room's zone);
- MAX_OCCURRENCES: occurrences of one series (`recurrence.expand`);
- INVITATIONS_PER_HOUR: invitation and update mails a person's bookings cause, one per
  recipient and invitation (a series is one), in a sliding hour kept in Redis (the `limits` library, the one
  Flask-Limiter runs on). If Redis does not answer, the mail is allowed: a booking is not
  refused because a counter is out of reach.

The caps are checked with a read in the booking's write transaction, after taking the person's
lock: on SQLite the write transaction (BEGIN IMMEDIATE) already admits one writer at a time; on
PostgreSQL, whose READ COMMITTED reads cannot see a racing transaction's insert, a transaction-scoped
advisory lock on the organiser makes two bookings of one person take turns, so neither passes a
cap by one. Every refusal, and every rate-limit refusal
of the pages and the API, is remembered in Redis for the admin console (`record_hit`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from limits import RateLimitItemPerHour
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from roombridge.booking.rules import BookingError, InvalidBooking, is_admin
from roombridge.config import Config
from roombridge.models import LIVE_STATUSES, Reservation, ReservationSource, Room
from roombridge.queue import redis

log = logging.getLogger(__name__)

HITS_KEY = "roombridge:limits:hits"
HITS_KEPT = 200  # the latest refusals shown to admins
LIMITER_KEY = "roombridge.invitation_limiter"


class QuotaExceeded(InvalidBooking):
    """The booking would take the person past a cap; the message says which (422, under "form")."""


class RateLimited(BookingError):
    """Too many of something in too short a time; `retry_after` says when to try again (429)."""

    def __init__(self, message: str, retry_after: int):
        self.retry_after = retry_after
        super().__init__(message)


def exempt(config: Config, email: str) -> bool:
    return is_admin(config, email)


def check_caps(session: Session, config: Config, organiser: str, room: Room,
               spans: Sequence[tuple[datetime, datetime]], now: datetime, *,
               new_reservations: int, editing: int | None = None) -> None:
    """Refuse (QuotaExceeded) `spans` in `room` if they take the organiser past a cap."""
    if exempt(config, organiser) or not spans:
        return
    _take_person_lock(session, organiser)
    mine = sa.and_(Reservation.organiser_email == organiser, Reservation.status.in_(LIVE_STATUSES),
                   Reservation.source != ReservationSource.GOOGLE)
    if editing is not None:
        mine = sa.and_(mine, Reservation.id != editing)
    messages: list[str] = []
    hit: list[str] = []
    if new_reservations:
        held = session.scalar(sa.select(sa.func.count()).select_from(Reservation).where(
            mine, Reservation.end_at > now))
        if held + new_reservations > config.MAX_LIVE_RESERVATIONS:
            messages.append(f"You may hold at most {config.MAX_LIVE_RESERVATIONS} reservations that have not "
                            f"ended; you hold {held}. Cancel some first.")
            hit.append("live reservations")

    zone = room.zone
    weeks: dict[datetime, float] = {}
    for start, end in spans:
        weeks[_week_of(start, zone)] = weeks.get(_week_of(start, zone), 0.0) + _hours(start, end)
    first, last = min(weeks), max(weeks) + timedelta(days=7)
    # A reservation counts in the week it starts in, so only those starting inside the weeks matter:
    # bounding start_at on both sides reads one slice of the (room_id, start_at) index, not the
    # room's whole past.
    booked = session.execute(sa.select(Reservation.start_at, Reservation.end_at).where(
        mine, Reservation.room_id == room.id, Reservation.start_at >= first.astimezone(UTC),
        Reservation.start_at < last.astimezone(UTC))).all()
    for start, end in booked:
        week = _week_of(start, zone)
        if week in weeks:
            weeks[week] += _hours(start, end)
    cap = config.MAX_HOURS_PER_ROOM_PER_WEEK
    over = sorted(week for week, hours in weeks.items() if hours > cap + 1e-9)
    if over:
        messages.append(f"You may book {room.name} for at most {cap:g} hours a week; this would pass it in the "
                        f"week of {over[0]:%Y-%m-%d}" + (f" and {len(over) - 1} more" if len(over) > 1 else "") + ".")
        hit.append("hours per room per week")
    if messages:
        record_hit(organiser, ", ".join(hit))
        raise QuotaExceeded({"form": messages})


def _take_person_lock(session: Session, organiser: str) -> None:
    """Until this transaction ends, the other bookings and edits of `organiser` wait here (PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        # Keyed by a hash of the address in a namespace of our own (the two-key form), so it cannot
        # meet another advisory lock; a hash collision only makes two people take turns.
        session.execute(sa.text("SELECT pg_advisory_xact_lock(1919, hashtext(:organiser))"),
                        {"organiser": organiser})


def _week_of(moment: datetime, zone) -> datetime:
    local = moment.astimezone(zone)
    monday = local.date() - timedelta(days=local.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=zone)


def _hours(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 3600


# --- invitation mails ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _InvitationLimiter:
    limiter: SlidingWindowCounterRateLimiter
    per_hour: RateLimitItemPerHour


def _invitation_limiter(config: Config) -> _InvitationLimiter:
    app = current_app._get_current_object()
    found = app.extensions.get(LIMITER_KEY)
    if found is None:
        # On the app's own Redis connection pool: its URL, password and TLS settings.
        storage = RedisStorage(config.REDIS_URL, connection_pool=redis(app).connection_pool,
                               key_prefix="roombridge:limits")
        found = app.extensions[LIMITER_KEY] = _InvitationLimiter(
            SlidingWindowCounterRateLimiter(storage), RateLimitItemPerHour(config.INVITATIONS_PER_HOUR))
    return found


def take_invitations(config: Config, organiser: str, mails: int) -> None:
    """Count `mails` invitation mails against the organiser's hour; RateLimited if they would pass it."""
    if mails <= 0 or exempt(config, organiser):
        return
    found = _invitation_limiter(config)
    try:
        if found.limiter.hit(found.per_hour, "invitations", organiser, cost=mails):
            return
        stats = found.limiter.get_window_stats(found.per_hour, "invitations", organiser)
    except RedisError:
        log.warning("could not count %d invitation mail(s) of %s: Redis does not answer; allowed",
                    mails, organiser, exc_info=True)
        return
    retry_after = max(1, math.ceil(stats.reset_time - time.time()))
    record_hit(organiser, "invitations per hour")
    raise RateLimited(
        f"This would send {mails} invitation mails, more than your {config.INVITATIONS_PER_HOUR} an hour allow "
        f"({stats.remaining} left now). Invite fewer people or try again later.", retry_after)


# --- who met a limit, for admins -----------------------------------------------------------------


def record_hit(email: str, limit: str, at: datetime | None = None) -> None:
    """Remember that `email` met `limit` (best effort: Redis being down loses only this note)."""
    at = at or datetime.now(UTC)
    entry = json.dumps({"email": email, "limit": limit, "at": at.isoformat(timespec="seconds")})
    try:
        with redis().pipeline() as pipe:
            pipe.lpush(HITS_KEY, entry).ltrim(HITS_KEY, 0, HITS_KEPT - 1).execute()
    except RedisError:
        log.warning("could not note that %s met the limit %s", email, limit, exc_info=True)


def recent_hits(limit: int = 50) -> list[dict]:
    """The latest refusals, newest first: {"email", "limit", "at"}."""
    return [json.loads(raw) for raw in redis().lrange(HITS_KEY, 0, limit - 1)]

"""ICS subscription feeds: a room's calendar, or one person's reservations, behind a secret link.

A feed link carries a random token (``rbf_`` + 256 bits); only its SHA-256 is stored, so a
leaked database holds no working link, and revoking a link makes it answer 404 at once.
A person's feed holds what they organise or attend, bookings made in Google that name them
included; a room's feed holds every live booking of the room, a private one as "Busy".

Calendar clients poll feeds every few minutes. `etag` answers from one aggregate query (how
many rows the feed covers and the newest change among them), so an unchanged feed costs a
single indexed read and a 304, never a rendering. The feed covers a window around today
(FEED_PAST back, FEED_AHEAD ahead), so the ETag also names the day the window starts on.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from icalendar import Calendar, Event
from sqlalchemy.orm import Session

from roombridge.booking.rules import normalise_email
from roombridge.invitations import PRODID, ical_uid
from roombridge.models import CalendarFeed, Reservation, ReservationStatus, Room, audit
from roombridge.unit_of_work import unit_of_work

TOKEN_PREFIX = "rbf_"  # noqa: S105 (a marker, not a secret)
FEED_PAST = timedelta(days=30)
FEED_AHEAD = timedelta(days=366)
# What a feed shows: bookings that hold the room or are on its Google calendar (not cancelled,
# released, refused or conflicting ones). A failed Google write still holds the room here.
FEED_STATUSES = (ReservationStatus.PENDING, ReservationStatus.CONFIRMED, ReservationStatus.FAILED)
BUSY = "Busy"
FORMAT_VERSION = "1"  # part of every ETag: a change to what a feed renders invalidates clients' copies


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewFeed:
    token: str  # shown once, in the link; never stored
    record: CalendarFeed


def _room(session: Session, calendar_id: str) -> Room:
    room = session.scalar(sa.select(Room).where(sa.func.lower(Room.calendar_id) == calendar_id.strip().lower()))
    if room is None:
        raise LookupError(f"no room {calendar_id!r}")
    return room


def create(session: Session, *, room_calendar_id: str | None = None, person_email: str | None = None,
           actor: str = "system") -> NewFeed:
    """A new feed link of a room (by its calendar e-mail) or a person; ValueError/LookupError if neither is valid."""
    if (room_calendar_id is None) == (person_email is None):
        raise ValueError("a feed is of one room or of one person")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with unit_of_work(session):
        record = CalendarFeed(token_hash=hash_token(token), prefix=token[: len(TOKEN_PREFIX) + 6], created_by=actor)
        if room_calendar_id is not None:
            record.room_id = _room(session, room_calendar_id).id
        else:
            record.person_email = normalise_email(person_email)
        session.add(record)
        session.flush()
        audit(session, actor, "feed.create", record, room_id=record.room_id, person_email=record.person_email,
              prefix=record.prefix)
    return NewFeed(token, record)


def revoke(session: Session, *, room_calendar_id: str | None = None, person_email: str | None = None,
           feed_id: int | None = None, actor: str = "system") -> int:
    """Revoke every live feed link of the room or person (or the one `feed_id` of them); how many."""
    query = sa.select(CalendarFeed).where(CalendarFeed.revoked_at.is_(None))
    with unit_of_work(session):
        if room_calendar_id is not None:
            query = query.where(CalendarFeed.room_id == _room(session, room_calendar_id).id)
        elif person_email is not None:
            query = query.where(CalendarFeed.person_email == normalise_email(person_email))
        else:
            raise ValueError("say whose feed to revoke: a room or a person")
        if feed_id is not None:
            query = query.where(CalendarFeed.id == feed_id)
        records = session.scalars(query).all()
        now = datetime.now(UTC)
        for record in records:
            record.revoked_at = now
            audit(session, actor, "feed.revoke", record, room_id=record.room_id, person_email=record.person_email,
                  prefix=record.prefix)
    return len(records)


def live_feeds(session: Session, *, person_email: str | None = None) -> list[CalendarFeed]:
    """Live feed links: a person's, or (no person given) every room's."""
    query = sa.select(CalendarFeed).where(CalendarFeed.revoked_at.is_(None))
    if person_email is not None:
        query = query.where(CalendarFeed.person_email == person_email.strip().lower())
    else:
        query = query.where(CalendarFeed.room_id.is_not(None))
    return list(session.scalars(query.order_by(CalendarFeed.created_at)))


def resolve(session: Session, token: str) -> CalendarFeed | None:
    """The live feed of `token`, or None (unknown, revoked, malformed)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    record = session.scalar(sa.select(CalendarFeed).where(CalendarFeed.token_hash == hash_token(token)))
    if record is None or record.revoked_at is not None:
        return None
    return record


# --- what a feed holds ------------------------------------------------------------------------


def _window(now: datetime) -> tuple[datetime, datetime]:
    day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day_start - FEED_PAST, day_start + FEED_AHEAD


def _covered(feed: CalendarFeed, now: datetime):
    """The WHERE clause of the feed's reservations."""
    start, end = _window(now)
    clauses = [Reservation.status.in_(FEED_STATUSES), Reservation.end_at > start, Reservation.start_at < end]
    if feed.room_id is not None:
        clauses.append(Reservation.room_id == feed.room_id)
    else:
        person = feed.person_email
        # Attendees are a JSON list: the quoted address matches on SQLite and PostgreSQL alike
        # (as booking.list_reservations does).
        clauses.append(sa.or_(Reservation.organiser_email == person,
                              sa.cast(Reservation.attendees, sa.Text).contains(f'"{person}"', autoescape=True)))
    return sa.and_(*clauses)


def etag(session: Session, feed: CalendarFeed, now: datetime | None = None) -> str:
    """A strong validator of the feed's content: one aggregate query, no rendering."""
    now = now or datetime.now(UTC)
    count, newest = session.execute(
        sa.select(sa.func.count(Reservation.id), sa.func.max(Reservation.updated_at)).where(_covered(feed, now))
    ).one()
    room_changed = None
    if feed.room_id is not None:  # the room's name is the calendar's name and every event's location
        room_changed = session.scalar(sa.select(Room.updated_at).where(Room.id == feed.room_id))
    window_start, _ = _window(now)
    parts = (FORMAT_VERSION, feed.id, window_start.date(), count, newest, room_changed)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def render(session: Session, feed: CalendarFeed, now: datetime | None = None) -> bytes:
    """The feed as an iCalendar document (RFC 5545)."""
    now = now or datetime.now(UTC)
    reservations = session.scalars(
        sa.select(Reservation).where(_covered(feed, now)).order_by(Reservation.start_at, Reservation.id)
    ).all()
    rooms = {r.id: r for r in session.scalars(sa.select(Room).where(Room.id.in_({r.room_id for r in reservations})))}
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    if feed.room_id is not None:
        room = feed.room or session.get(Room, feed.room_id)
        cal.add("x-wr-calname", room.name)
        cal.add("x-wr-timezone", room.time_zone or "UTC")
    else:
        cal.add("x-wr-calname", f"Room bookings of {feed.person_email}")
    cal.add("refresh-interval", timedelta(minutes=15), parameters={"VALUE": "DURATION"})
    for reservation in reservations:
        cal.add_component(_event(reservation, rooms[reservation.room_id], room_feed=feed.room_id is not None))
    return cal.to_ical()


def _event(reservation: Reservation, room: Room, *, room_feed: bool) -> Event:
    event = Event()
    # The Google event's iCalUID where there is one, so a client that also got the invitation
    # (or sees the Google calendar) files both as one meeting.
    if reservation.google_event_id:
        event.add("uid", ical_uid(reservation.google_event_id))
    else:
        event.add("uid", f"reservation-{reservation.id}@roombridge")
    event.add("dtstamp", reservation.updated_at or reservation.created_at)
    event.add("last-modified", reservation.updated_at or reservation.created_at)
    if reservation.all_day:
        event.add("dtstart", reservation.start_at.astimezone(room.zone).date())
        event.add("dtend", reservation.end_at.astimezone(room.zone).date())
    else:
        event.add("dtstart", reservation.start_at)
        event.add("dtend", reservation.end_at)
    hidden = room_feed and reservation.private
    event.add("summary", BUSY if hidden else reservation.title)
    event.add("location", room.name)
    event.add("status", "CONFIRMED" if reservation.status == ReservationStatus.CONFIRMED else "TENTATIVE")
    event.add("transp", "OPAQUE")
    if hidden:
        event.add("class", "PRIVATE")
    elif not room_feed and reservation.description:
        event.add("description", reservation.description)
    return event

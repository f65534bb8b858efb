"""Reading reservations: who may see and change what, lists, the day's timeline, the free-room finder.

The finder never offers what booking would refuse: `assess` asks the very rule functions that
`commands.book` applies (`rules.check_times`) and says why a room cannot be booked, when a
busy room is next free, and which free slots of the same length lie nearest that day.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from roombridge.booking.rules import NotFound, Policy, check_times, parse_hours
from roombridge.config import Config
from roombridge.models import LIVE_STATUSES, Reservation, ReservationSource, ReservationStatus, Room

# Suggested starts fall on this grid (in the room's zone), as a person would choose them.
SLOT_STEP = timedelta(minutes=15)


@dataclass(frozen=True)
class Busy:
    start: datetime
    end: datetime
    reservation_id: int
    title: str
    source: ReservationSource
    organiser_email: str
    private: bool = False
    attendees: tuple[str, ...] = ()



def can_see(reservation: Reservation, actor_email: str, actor_is_admin: bool) -> bool:
    actor = actor_email.strip().lower()
    return actor_is_admin or reservation.organiser_email == actor or actor in (reservation.attendees or [])


def can_change(reservation: Reservation, actor_email: str, actor_is_admin: bool) -> bool:
    return actor_is_admin or reservation.organiser_email == actor_email.strip().lower()


def organised_or_attended_by(email: str) -> sa.ColumnElement[bool]:
    """Reservations `email` organises or attends: the one filter of every "mine" list (pages, API).

    Attendees live in a JSON list, stored as the text json.dumps makes of it on SQLite and
    PostgreSQL alike; the address is looked for as that JSON string, with LIKE's wildcards
    escaped (`_` or `%` in an address must not match other people's).
    """
    me = email.strip().lower()
    return sa.or_(
        Reservation.organiser_email == me,
        sa.cast(Reservation.attendees, sa.Text).contains(json.dumps(me), autoescape=True),
    )


def get(session: Session, reservation_id: int, *, actor_email: str, actor_is_admin: bool) -> Reservation:
    """The reservation if the actor organises it, attends it or is an admin; else NotFound."""
    reservation = session.get(Reservation, reservation_id)
    if reservation is None or not can_see(reservation, actor_email, actor_is_admin):
        raise NotFound(f"no reservation {reservation_id}")
    return reservation


def list_reservations(
    session: Session,
    *,
    actor_email: str,
    actor_is_admin: bool,
    room_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    include_cancelled: bool = False,
    limit: int = 500,
) -> list[Reservation]:
    """Reservations the actor may see, overlapping [start, end) when given, soonest first."""
    query = sa.select(Reservation)
    if not actor_is_admin:
        query = query.where(organised_or_attended_by(actor_email))
    if room_id is not None:
        query = query.where(Reservation.room_id == room_id)
    if start is not None:
        query = query.where(Reservation.end_at > start)
    if end is not None:
        query = query.where(Reservation.start_at < end)
    if not include_cancelled:
        query = query.where(Reservation.status != ReservationStatus.CANCELLED)
    return list(session.scalars(query.order_by(Reservation.start_at, Reservation.id).limit(limit)))


def day_timeline(session: Session, rooms: list[Room], day: date) -> dict[int, list[Busy]]:
    """Each room's live reservations on `day` (the room's own calendar day); ONE query."""
    if not rooms:
        return {}
    windows = {}
    for room in rooms:
        zone = room.zone
        windows[room.id] = (
            datetime.combine(day, time(0), zone).astimezone(UTC),
            datetime.combine(day + timedelta(days=1), time(0), zone).astimezone(UTC),
        )
    earliest = min(w[0] for w in windows.values())
    latest = max(w[1] for w in windows.values())
    found = session.scalars(
        sa.select(Reservation)
        .where(
            Reservation.room_id.in_(list(windows)),
            Reservation.status.in_(LIVE_STATUSES),
            Reservation.start_at < latest,
            Reservation.end_at > earliest,
        )
        .order_by(Reservation.start_at)
    ).all()
    timeline: dict[int, list[Busy]] = {room.id: [] for room in rooms}
    for reservation in found:
        window_start, window_end = windows[reservation.room_id]
        if reservation.start_at < window_end and reservation.end_at > window_start:
            timeline[reservation.room_id].append(
                Busy(reservation.start_at, reservation.end_at, reservation.id, reservation.title,
                     reservation.source, reservation.organiser_email, reservation.private,
                     tuple(reservation.attendees or ()))
            )
    return timeline


def find_free_rooms(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    people: int | None = None,
    features: Iterable[str] = (),
    building: str | None = None,
    floor: str | None = None,
) -> list[Room]:
    """In-scope rooms free for all of [start, end) that fit the filters; one query."""
    busy = (
        sa.select(Reservation.id)
        .where(
            Reservation.room_id == Room.id,
            Reservation.status.in_(LIVE_STATUSES),
            Reservation.start_at < end,
            Reservation.end_at > start,
        )
        .exists()
    )
    query = sa.select(Room).where(Room.in_scope.is_(True), ~busy)
    if people:
        query = query.where(Room.capacity >= people)
    if building:
        query = query.where(Room.building == building)
    if floor:
        query = query.where(Room.floor == floor)
    wanted = {f.strip().lower() for f in features if f and f.strip()}
    rooms = session.scalars(query.order_by(Room.capacity, Room.name)).all()
    # Features are a short JSON list per room; filtering here keeps one portable query.
    return [room for room in rooms if wanted <= {f.lower() for f in (room.features or [])}]


# --- what the finder may offer ---------------------------------------------------------------------


def refusals(room: Room, config: Config, start: datetime, end: datetime, now: datetime) -> list[str]:
    """Why booking would refuse [start, end) in `room` on its time rules (empty: it would not).

    The same `check_times` that `commands.book` runs, so the finder and the form cannot disagree.
    """
    errors: dict[str, list[str]] = {}
    check_times(room, Policy.for_room(room, config), start, end, now, errors)
    return [message for messages in errors.values() for message in messages]


@dataclass(frozen=True)
class Assessment:
    """One room against one asked slot: can it be booked, and if not, why and what instead."""

    room: Room
    start: datetime
    end: datetime
    clashes: tuple[Busy, ...]
    refusals: tuple[str, ...]
    next_free: datetime | None  # the first start at or after the asked one that booking would accept
    nearest: tuple[tuple[datetime, datetime], ...]  # free slots of the same length that day, in time order

    @property
    def free(self) -> bool:
        return not self.clashes

    @property
    def bookable(self) -> bool:
        return not self.clashes and not self.refusals


def assess(
    session: Session,
    config: Config,
    rooms: list[Room],
    day: date,
    start: time,
    end: time,
    now: datetime,
    *,
    nearest: int = 3,
) -> dict[int, Assessment]:
    """Each room against [start, end) on `day`, wall-clock times in each room's zone; ONE query."""
    timeline = day_timeline(session, rooms, day)
    found = {}
    for room in rooms:
        zone = room.zone
        asked_start = datetime.combine(day, start, zone)
        asked_end = datetime.combine(day, end, zone)
        busy = timeline.get(room.id, [])
        found[room.id] = Assessment(
            room=room, start=asked_start, end=asked_end,
            clashes=tuple(b for b in busy if b.start < asked_end and b.end > asked_start),
            refusals=tuple(refusals(room, config, asked_start, asked_end, now)),
            **_alternatives(room, config, busy, asked_start, asked_end, now, nearest),
        )
    return found


def _alternatives(room: Room, config: Config, busy: list[Busy], start: datetime, end: datetime, now: datetime,
                  nearest: int) -> dict:
    """Free, bookable slots of the asked length on the asked day: the next one and the nearest few."""
    length = end - start
    zone = room.zone
    opens, closes = parse_hours(Policy.for_room(room, config).bookable_hours)
    day = start.date()
    earliest = datetime.combine(day, opens, zone)
    latest = datetime.combine(day + timedelta(days=1), time(0), zone) if closes is None else (
        datetime.combine(day, closes, zone))
    candidates = []
    cursor = earliest
    while cursor + length <= latest:
        candidate_end = cursor + length
        if (cursor != start
                and not any(b.start < candidate_end and b.end > cursor for b in busy)
                and not refusals(room, config, cursor, candidate_end, now)):
            candidates.append((cursor, candidate_end))
        cursor += SLOT_STEP
    later = [c for c in candidates if c[0] >= start]
    closest = sorted(candidates, key=lambda c: (abs(c[0] - start), c[0]))[:nearest]
    if nearest and later and not any(c[0] > start for c in closest):
        closest[-1:] = [later[0]]  # always one choice later in the day, when there is one
    return {"next_free": later[0][0] if later else None, "nearest": tuple(sorted(closest))}


def rooms_that_fit(
    session: Session,
    config: Config,
    instead_of: Room,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    people: int,
    limit: int = 5,
) -> list[Room]:
    """Other rooms free and bookable for [start, end) that fit: the same building, the seats, its features."""
    free = find_free_rooms(session, start, end, people=people, features=instead_of.features or (),
                           building=instead_of.building)
    return [room for room in free
            if room.id != instead_of.id and not refusals(room, config, start, end, now)][:limit]

"""Reading reservations: who may see and change what, lists, the day's timeline, the free-room finder."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from roombridge.booking.rules import NotFound
from roombridge.models import LIVE_STATUSES, Reservation, ReservationSource, ReservationStatus, Room


@dataclass(frozen=True)
class Busy:
    start: datetime
    end: datetime
    reservation_id: int
    title: str
    source: ReservationSource
    organiser_email: str
    hidden: bool = False  # a private meeting the viewer may not see into: title "Busy", no organiser



def can_see(reservation: Reservation, actor_email: str, actor_is_admin: bool) -> bool:
    actor = actor_email.strip().lower()
    return actor_is_admin or reservation.organiser_email == actor or actor in (reservation.attendees or [])


PRIVATE_TITLE = "Busy"


def may_see_details(reservation: Reservation, viewer_email: str | None, viewer_is_admin: bool = False) -> bool:
    """Whether the viewer may see what a reservation is (title, description, attendees), not only when.

    The one rule for private meetings: a reservation mirrored from a Google event whose
    visibility is private or confidential shows as "Busy" to everyone but its organiser, its
    attendees and admins, on every page and in the API. No viewer (None): only "Busy".
    """
    return not reservation.private or (viewer_email is not None and can_see(reservation, viewer_email,
                                                                              viewer_is_admin))


def title_for(reservation: Reservation, viewer_email: str | None, viewer_is_admin: bool = False) -> str:
    """The reservation's title as the viewer may see it (see `may_see_details`)."""
    return reservation.title if may_see_details(reservation, viewer_email, viewer_is_admin) else PRIVATE_TITLE


def can_change(reservation: Reservation, actor_email: str, actor_is_admin: bool) -> bool:
    return actor_is_admin or reservation.organiser_email == actor_email.strip().lower()


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
        actor = actor_email.strip().lower()
        # Attendees live in a JSON list; matching the quoted address works on SQLite and
        # PostgreSQL alike, and a cheap organiser index narrows the common case.
        query = query.where(
            sa.or_(
                Reservation.organiser_email == actor,
                sa.cast(Reservation.attendees, sa.Text).contains(f'"{actor}"', autoescape=True),
            )
        )
    if room_id is not None:
        query = query.where(Reservation.room_id == room_id)
    if start is not None:
        query = query.where(Reservation.end_at > start)
    if end is not None:
        query = query.where(Reservation.start_at < end)
    if not include_cancelled:
        query = query.where(Reservation.status != ReservationStatus.CANCELLED)
    return list(session.scalars(query.order_by(Reservation.start_at, Reservation.id).limit(limit)))


def day_timeline(session: Session, rooms: list[Room], day: date, viewer_email: str | None = None,
                 viewer_is_admin: bool = False) -> dict[int, list[Busy]]:
    """Each room's live reservations on `day` (the room's own calendar day) as the viewer may see them; ONE query."""
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
            shown = may_see_details(reservation, viewer_email, viewer_is_admin)
            timeline[reservation.room_id].append(
                Busy(reservation.start_at, reservation.end_at, reservation.id,
                     reservation.title if shown else PRIVATE_TITLE, reservation.source,
                     reservation.organiser_email if shown else "", hidden=not shown)
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

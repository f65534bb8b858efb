"""The people the organisation already has in Roombridge, and the rooms each of them prefers.

Attendee suggestions come only from here: who signed in, organised or attended a booking.
Roombridge never reads Google's directory (it holds no directory scope, by design), and
suggests only addresses in the organisation's own domains (ALLOWED_DOMAINS), so a guest on
someone's booking is not offered to everyone.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from roombridge.config import Config
from roombridge.models import FavouriteRoom, Person, Reservation, Room
from roombridge.unit_of_work import unit_of_work

SUGGESTIONS = 10
# Enough recent bookings to find attendees by, without reading the whole table on each keystroke.
ATTENDEE_SCAN = 500


def remember(session: Session, email: str, name: str, now: datetime | None = None) -> None:
    """Record a sign-in: the person becomes someone others can invite by name."""
    email = email.strip().lower()
    with unit_of_work(session):
        person = session.get(Person, email)
        if person is None:
            session.add(Person(email=email, name=(name or email)[:200], last_signed_in_at=now or datetime.now(UTC)))
        else:
            person.name = (name or email)[:200]
            person.last_signed_in_at = now or datetime.now(UTC)


def suggest(session: Session, config: Config, typed: str, limit: int = SUGGESTIONS) -> list[dict[str, str]]:
    """People whose address or name contains `typed` (two characters or more), named people first."""
    typed = typed.strip().lower()
    if len(typed) < 2:
        return []
    found: dict[str, str] = {}
    for person in session.scalars(
        sa.select(Person)
        .where(sa.or_(sa.func.lower(Person.email).contains(typed, autoescape=True),
                      sa.func.lower(Person.name).contains(typed, autoescape=True)))
        .order_by(Person.name).limit(limit)
    ):
        found[person.email] = person.name
    for organiser in session.scalars(
        sa.select(Reservation.organiser_email)
        .where(Reservation.organiser_email.contains(typed, autoescape=True)).distinct().limit(limit)
    ):
        found.setdefault(organiser, "")
    for attendees in session.scalars(
        sa.select(Reservation.attendees)
        .where(sa.func.lower(sa.cast(Reservation.attendees, sa.Text)).contains(typed, autoescape=True))
        .order_by(Reservation.id.desc()).limit(ATTENDEE_SCAN)
    ):
        for address in attendees or []:
            if typed in address:
                found.setdefault(address, "")
    allowed = config.ALLOWED_DOMAINS
    people = [{"email": email, "name": name} for email, name in found.items()
              if not allowed or email.rpartition("@")[2] in allowed]
    people.sort(key=lambda p: (not p["name"], not p["email"].startswith(typed), p["name"].lower(), p["email"]))
    return people[:limit]


def favourite_room_ids(session: Session, email: str) -> set[int]:
    return set(session.scalars(sa.select(FavouriteRoom.room_id).where(FavouriteRoom.user_email == email.lower())))


def set_favourite(session: Session, email: str, room_id: int, favourite: bool) -> bool:
    """Mark or unmark an in-scope room as `email`'s favourite; False if there is no such room."""
    email = email.strip().lower()
    with unit_of_work(session):
        room = session.get(Room, room_id)
        if room is None or not room.in_scope:
            return False
        existing = session.get(FavouriteRoom, (email, room_id))
        if favourite and existing is None:
            session.add(FavouriteRoom(user_email=email, room_id=room_id))
        elif not favourite and existing is not None:
            session.delete(existing)
    return True

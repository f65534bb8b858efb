"""Small builders for test data: sensible defaults, override what the test is about."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from roombridge.models import Reservation, ReservationSource, ReservationStatus, Room

_seq = itertools.count(1)


def make_room(session, **fields) -> Room:
    n = next(_seq)
    room = Room(
        calendar_id=fields.pop("calendar_id", f"room-{n}@resource.calendar.google.com"),
        name=fields.pop("name", f"Room {n}"),
        capacity=fields.pop("capacity", 8),
        time_zone=fields.pop("time_zone", "Europe/London"),
        **fields,
    )
    session.add(room)
    session.flush()
    return room


def make_reservation(session, room: Room, start: datetime | None = None, minutes: int = 60, **fields):
    start = start or datetime(2030, 1, 7, 10, 0, tzinfo=UTC)
    reservation = Reservation(
        room_id=room.id,
        organiser_email=fields.pop("organiser_email", "alice@example.com"),
        title=fields.pop("title", "Planning"),
        start_at=start,
        end_at=fields.pop("end_at", start + timedelta(minutes=minutes)),
        source=fields.pop("source", ReservationSource.API),
        status=fields.pop("status", ReservationStatus.PENDING),
        **fields,
    )
    session.add(reservation)
    session.flush()
    return reservation

"""The no-overlap rule is the database's, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError, OperationalError

from roombridge import db
from roombridge.db import Base
from roombridge.models import Reservation, ReservationSource, ReservationStatus
from roombridge.unit_of_work import unit_of_work
from tests.factories import make_reservation, make_room

T0 = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)


def test_instants_round_trip_as_aware_utc(session):
    room = make_room(session)
    from zoneinfo import ZoneInfo

    local = datetime(2030, 3, 31, 9, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    r = make_reservation(session, room, start=local)
    session.commit()
    session.expire_all()
    stored = session.get(Reservation, r.id)
    assert stored.start_at == local
    assert stored.start_at.tzinfo is UTC
    assert stored.start_at.hour == 7  # 09:30 CEST is 07:30 UTC


def test_naive_datetimes_are_refused(session):
    room = make_room(session)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        make_reservation(session, room, start=datetime(2030, 1, 1, 9, 0))


def test_overlap_is_refused_and_touching_slots_are_not(session):
    room = make_room(session)
    make_reservation(session, room, start=T0, minutes=60)
    make_reservation(session, room, start=T0 + timedelta(minutes=60), minutes=30)  # touches: fine
    session.commit()
    with pytest.raises(IntegrityError):
        make_reservation(session, room, start=T0 + timedelta(minutes=30), minutes=60)
    session.rollback()


def test_cancelled_and_conflict_rows_hold_nothing(session):
    room = make_room(session)
    make_reservation(session, room, start=T0, status=ReservationStatus.CANCELLED)
    make_reservation(session, room, start=T0, status=ReservationStatus.CONFLICT, source=ReservationSource.GOOGLE)
    live = make_reservation(session, room, start=T0)
    session.commit()
    # Reviving a cancelled row that now overlaps a live one is refused too (the update path).
    cancelled = session.scalars(sa.select(Reservation).where(Reservation.status == "cancelled")).one()
    cancelled.status = ReservationStatus.PENDING
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    assert session.get(Reservation, live.id).status == ReservationStatus.PENDING


def test_an_update_that_moves_onto_another_booking_is_refused(session):
    room = make_room(session)
    make_reservation(session, room, start=T0)
    later = make_reservation(session, room, start=T0 + timedelta(hours=2))
    session.commit()
    later.start_at = T0 + timedelta(minutes=30)
    later.end_at = T0 + timedelta(minutes=90)
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_other_rooms_do_not_clash(session):
    a, b = make_room(session), make_room(session)
    make_reservation(session, a, start=T0)
    make_reservation(session, b, start=T0)
    session.commit()


def test_concurrent_overlapping_bookings_store_exactly_one(app):
    """Twelve threads, each in its own transaction, race for overlapping slots of one room."""
    with app.app_context():
        room_id = make_room(db.session()).id
        db.session().commit()

    factory = db.session_factory(app)
    barrier = threading.Barrier(12)
    outcomes: list[str] = []

    def book(i: int) -> None:
        with factory() as s:
            s.add(
                Reservation(
                    room_id=room_id,
                    organiser_email=f"user{i}@example.com",
                    title=f"race {i}",
                    start_at=T0 + timedelta(minutes=i),  # all overlap each other
                    end_at=T0 + timedelta(minutes=60 + i),
                    source=ReservationSource.API,
                )
            )
            barrier.wait()
            try:
                s.commit()
                outcomes.append("stored")
            except (IntegrityError, OperationalError) as refusal:
                # PostgreSQL refuses with the exclusion constraint, or, when the racers' waits
                # form a cycle, by aborting some as deadlocked: not stored either way.
                if isinstance(refusal, OperationalError):
                    assert refusal.orig.sqlstate == "40P01", refusal
                s.rollback()
                outcomes.append("refused")

    threads = [threading.Thread(target=book, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(outcomes) == ["refused"] * 11 + ["stored"]
    with factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Reservation)) == 1


def test_read_then_write_units_serialise_instead_of_failing(app):
    """The booking pattern: look for a clash, then insert. In a unit of work no thread sees
    'database is locked'; each either stores or finds the clash that the winner made."""
    with app.app_context():
        room_id = make_room(db.session()).id
        db.session().commit()

    factory = db.session_factory(app)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def book(i: int) -> None:
        with factory() as s:
            s.scalar(sa.select(sa.func.count()).select_from(Reservation))  # an earlier read
            barrier.wait()
            try:
                with unit_of_work(s):
                    clash = s.scalar(
                        sa.select(Reservation.id).where(
                            Reservation.room_id == room_id, Reservation.start_at < T0 + timedelta(minutes=60)
                        )
                    )
                    if clash:
                        outcomes.append("clash seen")
                        return
                    s.add(
                        Reservation(
                            room_id=room_id, organiser_email="a@example.com", title="t", start_at=T0,
                            end_at=T0 + timedelta(minutes=60), source=ReservationSource.API,
                        )
                    )
                outcomes.append("stored")
            except (IntegrityError, OperationalError):  # PostgreSQL: no lock, the constraint decides
                outcomes.append("refused")

    threads = [threading.Thread(target=book, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("stored") == 1 and len(outcomes) == 8
    if app.config["ROOMBRIDGE"].DATABASE_URL.startswith("sqlite"):
        assert outcomes.count("clash seen") == 7


def test_the_migrations_build_exactly_the_schema_the_models_declare(app):
    """Tables, columns, indexes and constraints made by `alembic upgrade head` are what the models say:
    a model changed without its migration (or the reverse) fails here, not in a deployment."""
    with db.engine(app).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []

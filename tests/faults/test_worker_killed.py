"""A worker killed with SIGKILL in the middle of a push job: after a restart the state is exact.

(The same for a sync job is tests/jobs/test_sync.py::test_worker_killed_mid_sync_...)

The kill lands at the worst moment for a push: Google has stored the event, but the worker
has not yet recorded it in the database. The test makes that moment last by holding the
database's write lock (PostgreSQL: LOCK TABLE reservations; SQLite: BEGIN IMMEDIATE) from
another connection, so the worker's insert reaches the emulator and its UPDATE then waits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from jobs.reservations import WRITE_LOCK_TTL_SECONDS, requeue_stale_pending
from roombridge import booking, db
from roombridge.gcal import event_id_for
from roombridge.models import Reservation, ReservationSource, ReservationStatus
from roombridge.queue import redis
from tests.support import hold_write_lock, kill_worker, start_worker, wait_until
from tests.sync_support import ROOM, add_room, soon


def _live_events(emulator) -> list[dict]:
    return [e for e in emulator.state.raw_events(ROOM) if e.get("status") != "cancelled"]


@pytest.mark.slow
def test_worker_killed_after_google_stored_the_event_leaves_one_event_and_a_confirmed_reservation(
        emulator, google_app):
    app = google_app
    room_id = add_room(emulator, app)
    start = soon()
    with app.app_context():
        result = booking.book(db.session(), app.config["ROOMBRIDGE"], booking.BookingRequest(
            room_id=room_id, organiser_email="alice@example.com", title="Survives a kill", start=start,
            end=start + timedelta(hours=1), source=ReservationSource.API))
        rid = result.reservations[0].id

    lock = hold_write_lock(app)
    worker = start_worker(app, "write")
    try:
        wait_until(lambda: _live_events(emulator), timeout=30, what="the worker's insert to reach Google")
    finally:
        kill_worker(worker)
        lock.rollback()
        lock.close()

    # Google has the event; we never heard: the reservation is still pending, nothing recorded.
    with app.app_context():
        reservation = db.session().get(Reservation, rid)
        assert (reservation.status, reservation.google_calendar_id) == (ReservationStatus.PENDING, None)

    # The job died with its worker; the periodic safety net queues the write again once it is stale,
    # and the dead worker's per-reservation write lock (jobs/reservations.py) lapses by itself. Both
    # are fast-forwarded here, as the clock would: the stale check by `now`, the lock by its TTL.
    with app.app_context():
        conn = redis()
        for key in conn.keys("roombridge:write:lock:*"):
            assert 0 < conn.pttl(key) <= WRITE_LOCK_TTL_SECONDS * 1000  # it would expire on its own
            conn.pexpire(key, 1)
        assert requeue_stale_pending(now=datetime.now(UTC) + timedelta(minutes=10)) == [rid]
    restarted = start_worker(app, "write", burst=True)
    assert restarted.wait(60) == 0

    with app.app_context():
        reservation = db.session().get(Reservation, rid)
        assert reservation.status == ReservationStatus.CONFIRMED
        assert (reservation.google_calendar_id, reservation.google_event_id) == (ROOM, event_id_for(rid, 0))
        assert db.session().scalar(sa.select(sa.func.count(Reservation.id))) == 1
    assert [e["id"] for e in _live_events(emulator)] == [event_id_for(rid, 0)]  # one event, not two

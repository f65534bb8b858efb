"""Google (the emulator) answers 500 and 429 for a while: reservations stay pending, then confirm,
and nothing is duplicated, neither in Google nor here.

"A while" is longer than the gateway's own retries within one call, so RQ's retries carry
the jobs over several rounds; each round moves the scheduled retries forward instead of
sleeping through their backoff. A room sync during the outage fails the same way and is
retried; once Google answers again both sides hold each booking exactly once.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from roombridge import booking, db
from roombridge.gcal import event_id_for
from roombridge.models import Reservation, ReservationSource, ReservationStatus, RoomSyncState
from roombridge.notifications import request_sync
from roombridge.queue import queue
from tests.support import run_jobs
from tests.sync_support import ROOM, add_room, soon


def _retry_now(app, name: str) -> int:
    """Move every scheduled retry of the queue to now (its backoff has passed, as far as we care)."""
    with app.app_context():
        q = queue(name)
        registry = q.scheduled_job_registry
        jobs = [q.fetch_job(job_id) for job_id in registry.get_job_ids()]
        for job in jobs:
            registry.remove(job)
            q.enqueue_job(job)
        return len(jobs)


def _statuses(app) -> list[ReservationStatus]:
    with app.app_context():
        return list(db.session().scalars(sa.select(Reservation.status).order_by(Reservation.id)))


@pytest.fixture
def flaky_app(make_app, emulator, service_account_file):
    # Two tries per call with tiny pauses: the outage outlasts them, so RQ's retries are what carries on.
    return make_app(GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file, GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
                    GOOGLE_MAX_ATTEMPTS=2, GOOGLE_RETRY_BASE_SECONDS=0.01, SYNC_MIN_INTERVAL_SECONDS=0)


def test_500s_then_429s_keep_reservations_pending_then_all_confirm_exactly_once(flaky_app, emulator):
    app = flaky_app
    room_id = add_room(emulator, app)
    start = soon()
    with app.app_context():
        ids = [booking.book(db.session(), app.config["ROOMBRIDGE"], booking.BookingRequest(
            room_id=room_id, organiser_email="alice@example.com", title=f"Meeting {n}",
            start=start + timedelta(hours=n), end=start + timedelta(hours=n, minutes=30),
            source=ReservationSource.API)).reservations[0].id for n in range(3)]
        request_sync(room_id)
    google_made = emulator.state.book("bob@example.com", ROOM, "Booked in Google",
                                      (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                      (start + timedelta(days=1, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    # The outage: every Calendar call on the room fails, first with 500s, then with 429s.
    emulator.state.add_fault(500, times=8, calendar=ROOM)
    emulator.state.add_fault(429, times=8, calendar=ROOM)

    rounds = 0
    while emulator.state.faults:
        rounds += 1
        assert rounds <= 6, "the outage outlasted every retry"
        run_jobs(app, queues=("write", "sync"))
        if emulator.state.faults:
            assert set(_statuses(app)) == {ReservationStatus.PENDING}  # waiting, not failed, not lost
        _retry_now(app, "write")
        _retry_now(app, "sync")
    assert rounds >= 2
    run_jobs(app, queues=("write", "sync"))

    with app.app_context():
        assert db.session().get(RoomSyncState, room_id).sync_token  # the sync got through in the end
        rows = list(db.session().scalars(sa.select(Reservation).order_by(Reservation.id)))
    ours = [r for r in rows if r.id in ids]
    assert [r.status for r in ours] == [ReservationStatus.CONFIRMED] * 3
    assert [r.google_event_id for r in ours] == [event_id_for(rid, 0) for rid in ids]
    mirrored = [r for r in rows if r.source == ReservationSource.GOOGLE]
    assert [(r.google_event_id, r.status) for r in mirrored] == [(google_made["id"], ReservationStatus.CONFIRMED)]
    assert len(rows) == 4  # our three, Google's one; no echo imported
    live = Counter(e["id"] for e in emulator.state.raw_events(ROOM) if e.get("status") != "cancelled")
    assert live == Counter({event_id_for(rid, 0): 1 for rid in ids} | {google_made["id"]: 1})

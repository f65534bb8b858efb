"""A booking is confirmed while the safety net sweeps 2,000 rooms, against an emulator enforcing Google's quota."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from jobs.sync import safety_net_sync
from roombridge import booking, db, sweep
from roombridge.gcal import call_budget
from roombridge.models import Reservation, ReservationStatus, Room, RoomSyncState
from roombridge.queue import redis
from tests.support import SERVICE_ACCOUNT, start_worker, stop_worker, wait_until

ROOMS = 2000
BUDGET = 300


def _seed(emulator, app) -> list[int]:
    """2,000 room calendars shared in the emulator (in-process, fast) and in scope here, never synced."""
    emails = [f"sweep-{n:04d}@resource.calendar.google.com" for n in range(ROOMS)]
    for email in emails:
        emulator.state.add_calendar(email, email.split("@")[0], kind="room", time_zone="UTC")
        emulator.state.share(email, SERVICE_ACCOUNT, "writer")
    with app.app_context():
        session = db.session()
        rooms = [Room(calendar_id=email, name=email.split("@")[0], time_zone="UTC") for email in emails]
        session.add_all(rooms)
        session.commit()
        return [room.id for room in rooms]


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_booking_is_confirmed_while_a_sweep_of_2000_rooms_runs_within_what_the_budget_leaves(
        make_google_app, emulator):
    emulator.state.update_settings(quota_enabled=True)  # Google's 600 a minute per user, sliding
    app = make_google_app(GOOGLE_CALLS_PER_MINUTE=BUDGET, SAFETY_SYNC_INTERVAL_SECONDS=10,
                          SAFETY_SYNC_MAX_AGE_SECONDS=3600, BOOKABLE_HOURS="00:00-23:59")
    room_ids = _seed(emulator, app)

    with app.app_context():
        assert safety_net_sync() > 0  # the first tick: the stalest (never synced) rooms, as many as the budget leaves
        plan = sweep.latest(redis())
    assert plan.rooms == ROOMS and plan.never_synced == ROOMS
    # What a 10 s tick may take: the budget less the writes' and syncs' reserve, a sixth of it.
    assert plan.left_per_minute == BUDGET - call_budget(app).reserves["sweep"]
    planned = int(plan.left_per_minute * 10 / 60)

    worker = start_worker(app, GOOGLE_CALLS_PER_MINUTE=str(BUDGET))
    try:
        wait_until(lambda: _synced(app) >= 5, timeout=60, what="the sweep to be under way")
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        with app.app_context():
            result = booking.book(db.session(), app.config["ROOMBRIDGE"], booking.BookingRequest(
                room_id=room_ids[-1], organiser_email="alice@example.com", title="Standup", start=start,
                end=start + timedelta(minutes=30)))
            reservation_id = result.reservations[0].id
        wait_until(lambda: _status(app, reservation_id) == ReservationStatus.CONFIRMED, timeout=60,
                   what="the booking to be confirmed")
        swept_when_confirmed = _synced(app)
        # Another tick while the first's sweeps still run: it takes only what is left again.
        with app.app_context():
            safety_net_sync()
    finally:
        stop_worker(worker)

    # Confirmed while the sweep was under way: it had started and had not finished the tick's rooms.
    assert 5 <= swept_when_confirmed < ROOMS
    assert swept_when_confirmed <= planned
    usage = call_budget(app).usage(minutes=3)
    for minute in usage.minutes:
        assert minute.granted["sweep"] <= plan.left_per_minute  # the sweep never took more than it was left
        assert minute.total <= BUDGET
    assert sum(m.granted["write"] for m in usage.minutes) >= 1
    # Google (the emulator) never answered a rate limit.
    assert [r for r in emulator.state.requests() if r.get("refused_by_quota")] == []


def _synced(app) -> int:
    with app.app_context():
        count = db.session().scalar(sa.select(sa.func.count()).select_from(RoomSyncState)
                                    .where(RoomSyncState.last_sync_at.is_not(None)))
        db.session().rollback()
        return count


def _status(app, reservation_id: int) -> ReservationStatus:
    with app.app_context():
        status = db.session().get(Reservation, reservation_id).status
        db.session().rollback()
        return status

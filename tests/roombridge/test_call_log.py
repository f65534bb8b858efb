"""The Google call log: real bookings and syncs against the emulator, refusals, the buffer, retention."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from jobs.call_log import flush_google_calls, purge_google_calls
from jobs.schedule import PERIODIC
from jobs.sync import sync_room
from roombridge import booking, call_log, db, metrics
from roombridge.call_log import BUFFER_KEY, CallLog, CallRecord
from roombridge.gcal import CalendarGateway, CalendarNotInScope, EventNotFound, RetriableGoogleError, event_id_for
from roombridge.models import GoogleCall, Room
from roombridge.queue import redis
from tests.factories import make_room
from tests.support import free_port, run_jobs
from tests.sync_support import ROOM, add_room, rfc, soon

OUT_OF_SCOPE_ROOM = "borealis@resource.calendar.google.com"


def logged(app) -> list[GoogleCall]:
    with app.app_context():
        return list(db.session().scalars(sa.select(GoogleCall).order_by(GoogleCall.id)))


def flushed(app) -> list[GoogleCall]:
    with app.app_context():
        flush_google_calls()
    return logged(app)


def test_a_booking_and_a_sync_are_logged_with_operation_kind_outcome_and_status(emulator, google_app):
    room_id = add_room(emulator, google_app)
    start = soon()
    with google_app.app_context():
        made = booking.book(db.session(), google_app.config["ROOMBRIDGE"], booking.BookingRequest(
            room_id=room_id, organiser_email="alice@example.com", title="Planning", start=start,
            end=start + timedelta(hours=1)))
        reservation_id = made.reservations[0].id
    run_jobs(google_app, queues=("write",))  # the booking's events.insert
    emulator.state.book("bob@example.com", ROOM, "Standup", rfc(start + timedelta(hours=2)),
                        rfc(start + timedelta(hours=3)))
    with google_app.app_context():
        sync_room(room_id)  # events.list, every page
        assert CallLog(redis()).waiting() >= 2
    calls = flushed(google_app)
    assert [(c.operation, c.kind, c.outcome, c.status, c.room_id) for c in calls] == [
        ("events.insert", "write", "ok", 200, room_id),
        ("events.list", "sync", "ok", 200, room_id),
    ]
    assert all(c.calendar_id is None for c in calls)  # a room's calls carry its id, not its address
    assert all(abs((c.at - datetime.now(UTC)).total_seconds()) < 60 and c.duration_ms >= 0 for c in calls)
    google_side = [r for r in emulator.state.requests(calendar=ROOM) if r["path"].startswith("/calendar/v3/")]
    assert len(google_side) == len(calls)  # one row per call Google saw, no more, no less
    with google_app.app_context():
        assert CallLog(redis()).waiting() == 0
        gateway = CalendarGateway.for_app(kind="write")
        with pytest.raises(EventNotFound):
            gateway.get_event(ROOM, event_id_for(reservation_id, 7))
        assert gateway.delete_event(ROOM, event_id_for(reservation_id)) is True
    assert [(c.operation, c.outcome, c.status) for c in flushed(google_app)[2:]] == [
        ("events.get", "not_found", 404), ("events.delete", "ok", 204)]


def test_a_refused_calendar_is_logged_as_refused_and_google_never_hears_of_it(emulator, google_app):
    add_room(emulator, google_app)
    emulator.state.add_calendar(OUT_OF_SCOPE_ROOM, "Borealis", kind="room")
    with google_app.app_context():
        out_of_scope = make_room(db.session(), calendar_id=OUT_OF_SCOPE_ROOM, name="Borealis", in_scope=False).id
        db.session().commit()
        gateway = CalendarGateway.for_app(kind="sweep")
    emulator.state.clear_requests()
    for calendar_id in (OUT_OF_SCOPE_ROOM, "alice@example.com"):
        with google_app.app_context(), pytest.raises(CalendarNotInScope):
            gateway.list_events(calendar_id)
    assert [r for r in emulator.state.requests() if r["path"].startswith("/calendar/v3/")] == []
    calls = flushed(google_app)
    assert [(c.operation, c.kind, c.outcome, c.status, c.room_id, c.calendar_id) for c in calls] == [
        ("events.list", "sweep", "refused_by_allowlist", None, out_of_scope, None),
        ("events.list", "sweep", "refused_by_allowlist", None, None, "alice@example.com"),
    ]
    with google_app.app_context():
        found = call_log.summary(db.session(), datetime.now(UTC) - timedelta(hours=1))
    assert found.refused == 2 and found.non_room_calls == 0 and found.rooms_in_scope == 1
    assert dict(found.refused_calendars) == {OUT_OF_SCOPE_ROOM: 1, "alice@example.com": 1}


def test_with_redis_down_calendar_calls_go_on_and_the_records_are_counted_as_dropped(emulator, make_google_app):
    app = make_google_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    add_room(emulator, app)
    dropped = metrics.GOOGLE_CALL_LOG_DROPPED.labels("unavailable")
    before = dropped._value.get()
    with app.app_context():
        gateway = CalendarGateway.for_app(kind="write")  # writes go ahead without the budget too
        event = gateway.insert_event(ROOM, event_id_for(41), {
            "summary": "Planning", "start": {"dateTime": rfc(soon())},
            "end": {"dateTime": rfc(soon() + timedelta(hours=1))}})
    assert event["id"] == event_id_for(41)
    assert dropped._value.get() == before + 1


def test_a_flush_with_the_database_down_keeps_the_records_for_the_next(google_app):
    with google_app.app_context():
        conn = redis()
        log = CallLog(conn)
        log.record(CallRecord(datetime.now(UTC).timestamp(), ROOM, "events.list", "sync", "ok", 200, 12))
        with db.engine().begin() as connection:  # as if the table could not be written just now
            connection.execute(sa.text("ALTER TABLE google_calls RENAME TO google_calls_away"))
        try:
            with pytest.raises(sa.exc.DatabaseError):
                call_log.flush(db.session(), conn)
            db.session().rollback()
            assert log.waiting() == 1  # not trimmed: it was never written
        finally:
            with db.engine().begin() as connection:
                connection.execute(sa.text("ALTER TABLE google_calls_away RENAME TO google_calls"))
        assert call_log.flush(db.session(), conn) == 1 and log.waiting() == 0


def test_the_buffer_is_capped_and_flushed_in_batches(google_app, monkeypatch):
    monkeypatch.setattr(call_log, "BUFFER_CAP", 5)
    full = metrics.GOOGLE_CALL_LOG_DROPPED.labels("buffer_full")
    before = full._value.get()
    with google_app.app_context():
        room = make_room(db.session(), calendar_id=ROOM)
        db.session().commit()
        log = CallLog(redis())
        for n in range(7):
            log.record(CallRecord(1_900_000_000 + n, ROOM, "events.list", "sweep", "ok", 200, n))
        assert log.waiting() == 5 and full._value.get() == before + 2
        assert call_log.flush(db.session(), redis(), batch=2) == 5
        rows = list(db.session().scalars(sa.select(GoogleCall).order_by(GoogleCall.at)))
    assert [r.duration_ms for r in rows] == [2, 3, 4, 5, 6]  # the oldest two were dropped
    assert {r.room_id for r in rows} == {room.id}


def test_unreadable_records_are_skipped_not_fatal(google_app):
    with google_app.app_context():
        redis().rpush(BUFFER_KEY, b"not json", CallRecord(1_900_000_000, None, "channels.stop", "renewal", "ok",
                                                          204, 5).encode())
        assert call_log.flush(db.session(), redis()) == 1
        assert redis().llen(BUFFER_KEY) == 0


def _row(at: datetime, room_id: int | None, **fields) -> dict:
    return {"at": at, "room_id": room_id, "calendar_id": None, "operation": "events.list", "kind": "sweep",
            "outcome": "ok", "status": 200, "duration_ms": 10, **fields}


def test_retention_deletes_only_rows_older_than_the_setting_in_batches(make_app):
    app = make_app(GOOGLE_CALL_LOG_RETENTION_DAYS=3)
    now = datetime.now(UTC)
    with app.app_context():
        session = db.session()
        room = make_room(session)
        ages = [timedelta(days=10), timedelta(days=4), timedelta(days=3, minutes=1), timedelta(days=2, hours=23),
                timedelta(hours=1)]
        session.execute(sa.insert(GoogleCall), [_row(now - age, room.id, duration_ms=i) for i, age in enumerate(ages)])
        session.commit()
        assert call_log.purge(session, now, 3, batch=2) == 3
        assert call_log.purge(session, now, 3, batch=2) == 0
        assert sorted(session.scalars(sa.select(GoogleCall.duration_ms))) == [3, 4]
        assert purge_google_calls() == 0  # the job uses GOOGLE_CALL_LOG_RETENTION_DAYS
        session.execute(sa.insert(GoogleCall), [_row(now - timedelta(days=3, hours=1), room.id)])
        session.commit()
        assert purge_google_calls() == 1


def test_both_jobs_are_on_the_schedule():
    assert {p.id: p.func for p in PERIODIC if "google-calls" in p.id} == {
        "flush-google-calls": "jobs.call_log:flush_google_calls",
        "purge-google-calls": "jobs.call_log:purge_google_calls"}


def test_room_calls_filter_and_paginate_newest_first(app):
    now = datetime.now(UTC)
    with app.app_context():
        session = db.session()
        room, other = make_room(session), make_room(session)
        rows = [_row(now - timedelta(minutes=i), room.id, kind="write" if i % 3 == 0 else "sweep",
                     outcome="rate_limited" if i == 4 else "ok", duration_ms=i) for i in range(7)]
        session.execute(sa.insert(GoogleCall), [*rows, _row(now, other.id)])
        session.commit()
        first = call_log.room_calls(session, room.id, per_page=3)
        assert [c.duration_ms for c in first.calls] == [0, 1, 2] and first.has_next
        last = call_log.room_calls(session, room.id, page=3, per_page=3)
        assert [c.duration_ms for c in last.calls] == [6] and not last.has_next
        assert [c.duration_ms for c in call_log.room_calls(session, room.id, kind="write").calls] == [0, 3, 6]
        assert [c.duration_ms for c in call_log.room_calls(session, room.id, outcome="rate_limited").calls] == [4]
        found = call_log.summary(session, now - timedelta(hours=1), top=1)
        assert found.total == 8 and found.by_outcome == {"ok": 7, "rate_limited": 1}
        assert [(r.room_id, r.calls, r.not_ok) for r in found.top_rooms] == [(room.id, 7, 1)]
        assert found.rooms_called == 2 and found.by_kind["write"] == {"ok": 3}
        assert session.get(Room, room.id) is not None


def test_a_call_made_on_a_person_calendar_would_show_and_an_unknown_room_calendar_would_not(app):
    """The summary's 'never touches user calendars' figure reads the rows, not a promise."""
    now = datetime.now(UTC)
    with app.app_context():
        session = db.session()
        session.execute(sa.insert(GoogleCall), [
            # The access check of a room calendar not (yet) added: a room's calendar, so not counted.
            _row(now, None, calendar_id="nova@resource.calendar.google.com", outcome="not_found", status=404),
            _row(now, None, calendar_id="alice@example.com", outcome="refused_by_allowlist", status=None),
        ])
        session.commit()
        assert call_log.summary(session, now - timedelta(hours=1)).non_room_calls == 0
        session.execute(sa.insert(GoogleCall), [_row(now, None, calendar_id="alice@example.com")])
        session.commit()
        assert call_log.summary(session, now - timedelta(hours=1)).non_room_calls == 1


def test_after_redis_failed_records_are_dropped_without_asking_it_for_a_while(own_redis, monkeypatch):
    """A Redis that hangs would otherwise add its timeouts to every call; this one is stopped and started."""
    from redis import Redis

    url, stop, restart = own_redis
    monkeypatch.setattr(call_log, "UNAVAILABLE_PAUSE_SECONDS", 1.0)
    conn = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
    log = CallLog(conn)
    dropped = metrics.GOOGLE_CALL_LOG_DROPPED.labels("unavailable")
    before = dropped._value.get()
    record = CallRecord(1_900_000_000, ROOM, "events.list", "sync", "ok", 200, 9)
    log.record(record)
    assert log.waiting() == 1
    stop()
    log.record(record)  # tries, fails: from now on Redis is left alone for a while
    restart()
    log.record(record)  # Redis is back, but not asked yet
    assert dropped._value.get() == before + 2 and log.waiting() == 0
    time.sleep(1.1)
    log.record(record)
    assert log.waiting() == 1 and dropped._value.get() == before + 2
    conn.close()


def test_each_attempt_google_rate_limits_is_logged_with_its_status(emulator, make_google_app):
    app = make_google_app(GOOGLE_MAX_ATTEMPTS=2, GOOGLE_RETRY_BASE_SECONDS=0.01)
    add_room(emulator, app)
    emulator.state.update_settings(quota_enabled=True, quota_per_user=1, quota_user_status=429)
    with app.app_context():
        gateway = CalendarGateway.for_app(kind="sync")
        with pytest.raises(EventNotFound):
            gateway.get_event(ROOM, event_id_for(5))  # Google's one call this minute
        with pytest.raises(RetriableGoogleError):
            gateway.get_event(ROOM, event_id_for(5))  # refused by Google twice: the attempt and its retry
    assert [(c.operation, c.kind, c.outcome, c.status) for c in flushed(app)] == [
        ("events.get", "sync", "not_found", 404),
        ("events.get", "sync", "rate_limited", 429),
        ("events.get", "sync", "rate_limited", 429),
    ]

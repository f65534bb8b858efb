"""Check-in against the emulator: what a release, an early end and an extension do in Google.

Releases run through the real jobs (release_no_shows, write_reservation), in this process or
in worker and scheduler processes, against the emulator over HTTP.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from jobs.checkin import release_no_shows
from jobs.reservations import requeue_stale_pending, write_reservation
from jobs.sync import sync_room
from roombridge import booking, db
from roombridge.checkin import apply_deadline, end_early, extend, person
from roombridge.models import AuditEntry, ReleaseReason, Reservation, ReservationSource, ReservationStatus, Room
from roombridge.queue import redis
from roombridge.unit_of_work import unit_of_work
from tests.factories import make_reservation
from tests.support import (
    ROOT,
    hold_write_lock,
    kill_worker,
    run_jobs,
    start_worker,
    stop_worker,
    wait_until,
    worker_env,
)
from tests.sync_support import ROOM, add_room, rfc, soon

ALICE, BOB = "alice@example.com", "bob@example.com"


def _require_checkin(app, room_id: int) -> None:
    with app.app_context(), unit_of_work(db.session()) as session:
        session.get(Room, room_id).checkin_required = True


def _book(app, room_id: int, start: datetime, minutes: int = 60) -> int:
    with app.app_context():
        made = booking.book(db.session(), app.config["ROOMBRIDGE"], booking.BookingRequest(
            room_id=room_id, organiser_email=ALICE, title="Planning", start=start,
            end=start + timedelta(minutes=minutes), attendees=[BOB], source=ReservationSource.WEB))
        return made.reservations[0].id


def _reservation(app, reservation_id: int) -> Reservation:
    with app.app_context():
        return db.session().get(Reservation, reservation_id)


def _live_events(emulator) -> list[dict]:
    return [e for e in emulator.state.raw_events(ROOM) if e.get("status") != "cancelled"]


def _room_answer(event: dict) -> str:
    return next(a["responseStatus"] for a in event["attendees"] if a["email"] == ROOM)


def _count(app, action: str) -> int:
    with app.app_context():
        return db.session().scalar(sa.select(sa.func.count(AuditEntry.id)).where(AuditEntry.action == action))


def _deadline(app, reservation_id: int, now: datetime) -> str:
    with app.app_context():
        return apply_deadline(db.session(), app.config["ROOMBRIDGE"], reservation_id, now=now)


@pytest.fixture
def room_id(emulator, google_app):
    room_id = add_room(emulator, google_app)
    _require_checkin(google_app, room_id)
    return room_id


def test_a_released_booking_of_ours_leaves_the_room_calendar_and_the_organiser_is_told(
        emulator, make_google_app, smtp_server):
    app = make_google_app(SMTP_URL=smtp_server.url)
    room_id = add_room(emulator, app)
    _require_checkin(app, room_id)
    start = soon()
    rid = _book(app, room_id, start)
    run_jobs(app)
    assert [e["summary"] for e in _live_events(emulator)] == ["Planning"]

    assert _deadline(app, rid, start + timedelta(minutes=15)) == "released"
    run_jobs(app)

    assert _live_events(emulator) == []
    subjects = [(to, m["Subject"]) for to, m in smtp_server.wait_for(3)]
    assert ([ALICE], "Released: Planning") in subjects
    # The next syncs (incremental, then full) see the deletion and agree: still released, no notice.
    with app.app_context():
        sync_room(room_id)
        sync_room(room_id, full=True)
    released = _reservation(app, rid)
    assert (released.status, released.release_reason) == (ReservationStatus.RELEASED, ReleaseReason.NO_SHOW)
    assert _count(app, "reservation.cancelled_in_google") == 0


def test_a_released_google_booking_is_declined_by_the_room_never_deleted_and_not_revived(
        emulator, google_app, room_id):
    start = soon()
    made = emulator.state.book(ALICE, ROOM, "Standup", rfc(start), rfc(start + timedelta(hours=1)), attendees=[BOB])
    with google_app.app_context():
        sync_room(room_id)
        rid = db.session().scalar(sa.select(Reservation.id).where(Reservation.google_event_id == made["id"]))

    assert _deadline(google_app, rid, start + timedelta(minutes=15)) == "released"
    run_jobs(google_app)

    room_copy = next(e for e in emulator.state.raw_events(ROOM) if e["id"] == made["id"])
    assert (room_copy["status"], _room_answer(room_copy)) == ("confirmed", "declined")
    organisers = emulator.state.person_event(ALICE, made["id"])
    assert (organisers["status"], _room_answer(organisers)) == ("confirmed", "declined")
    assert {a["email"]: a["responseStatus"] for a in organisers["attendees"]}[BOB] == "needsAction"  # untouched
    assert not [r for r in emulator.state.requests(calendar=ROOM, method="DELETE")]

    with google_app.app_context():
        sync_room(room_id)
        sync_room(room_id, full=True)
    mirror = _reservation(google_app, rid)
    assert (mirror.status, mirror.room_response) == (ReservationStatus.RELEASED, "declined")
    assert _count(google_app, "reservation.cancelled_in_google") == 0
    assert _count(google_app, "reservation.changed_in_google") == 0


@pytest.mark.parametrize("made_in", ["here", "google"])
def test_a_release_whose_google_work_was_lost_after_the_commit_is_done_by_the_safety_net(
        emulator, make_google_app, made_in):
    app = make_google_app()
    room_id = add_room(emulator, app)
    _require_checkin(app, room_id)
    start = soon()
    if made_in == "here":
        rid = _book(app, room_id, start)
        run_jobs(app)
    else:
        made = emulator.state.book(ALICE, ROOM, "Standup", rfc(start), rfc(start + timedelta(hours=1)))
        with app.app_context():
            sync_room(room_id)
            rid = db.session().scalar(sa.select(Reservation.id).where(Reservation.google_event_id == made["id"]))
    # The process died between its commit and queueing the Google write: here, Redis is gone instead.
    lost = make_google_app(REDIS_URL="redis://127.0.0.1:9/0")
    assert _deadline(lost, rid, start + timedelta(minutes=15)) == "released"
    assert _reservation(app, rid).status == ReservationStatus.RELEASED

    with app.app_context():
        assert requeue_stale_pending(now=datetime.now(UTC) + timedelta(minutes=10)) == [rid]
    run_jobs(app)

    events = {e["id"]: e for e in emulator.state.raw_events(ROOM)}
    if made_in == "here":
        assert _live_events(emulator) == []
    else:
        assert _room_answer(events[made["id"]]) == "declined"
    with app.app_context():
        assert requeue_stale_pending(now=datetime.now(UTC) + timedelta(minutes=20)) == []  # done: not again


def test_end_early_and_extend_move_the_end_in_google(emulator, google_app, room_id):
    config = google_app.config["ROOMBRIDGE"]
    start = soon()
    rid = _book(google_app, room_id, start)
    run_jobs(google_app)

    with google_app.app_context():
        extend(db.session(), config, rid, 30, person(ALICE), now=start + timedelta(minutes=5))
    run_jobs(google_app)
    assert [e["end"]["dateTime"] for e in _live_events(emulator)] == [
        (start + timedelta(minutes=90)).astimezone(_zone()).isoformat()]

    with google_app.app_context():
        end_early(db.session(), config, rid, person(ALICE), now=start + timedelta(minutes=20))
    run_jobs(google_app)
    [event] = _live_events(emulator)
    assert event["end"]["dateTime"] == (start + timedelta(minutes=20)).astimezone(_zone()).isoformat()
    ended = _reservation(google_app, rid)
    assert (ended.status, ended.original_end_at) == (ReservationStatus.CONFIRMED, start + timedelta(minutes=90))


def test_end_early_of_a_google_booking_is_the_room_declining_the_rest_and_it_cannot_be_extended(
        emulator, google_app, room_id):
    config = google_app.config["ROOMBRIDGE"]
    start = soon()
    made = emulator.state.book(ALICE, ROOM, "Standup", rfc(start), rfc(start + timedelta(hours=1)), attendees=[BOB])
    with google_app.app_context():
        sync_room(room_id)
        rid = db.session().scalar(sa.select(Reservation.id).where(Reservation.google_event_id == made["id"]))

    # The room cannot lengthen someone else's meeting: no answer of its copy would.
    with google_app.app_context(), pytest.raises(booking.NotAllowed, match="only its organiser"):
        extend(db.session(), config, rid, 15, person(ALICE), now=start + timedelta(minutes=5))

    with google_app.app_context():
        end_early(db.session(), config, rid, person(ALICE), now=start + timedelta(minutes=20))
    ended = _reservation(google_app, rid)
    assert (ended.status, ended.end_at, ended.original_end_at) == (
        ReservationStatus.CONFIRMED, start + timedelta(minutes=20), start + timedelta(hours=1))
    run_jobs(google_app)

    # Google: the room declined on its copy (the answer reaches the organiser), with a note; the
    # event's time is the organiser's and stays; nothing was deleted, nobody else's answer touched.
    room_copy = next(e for e in emulator.state.raw_events(ROOM) if e["id"] == made["id"])
    room_entry = next(a for a in room_copy["attendees"] if a["email"] == ROOM)
    assert room_entry["responseStatus"] == "declined" and room_entry["comment"].startswith("Ended early at ")
    organisers = emulator.state.person_event(ALICE, made["id"])
    assert _room_answer(organisers) == "declined"
    assert {a["email"]: a["responseStatus"] for a in organisers["attendees"]}[BOB] == "needsAction"
    assert organisers["end"] == made["end"]
    assert not emulator.state.requests(calendar=ROOM, method="DELETE")
    assert [r["status"] for r in emulator.state.requests(calendar=ROOM, method="PATCH")] == [200]

    # The syncs that follow see the decline and the booked end, and keep the meeting as it was held.
    with google_app.app_context():
        sync_room(room_id)
        sync_room(room_id, full=True)
    mirror = _reservation(google_app, rid)
    assert (mirror.status, mirror.end_at, mirror.room_response) == (
        ReservationStatus.CONFIRMED, start + timedelta(minutes=20), "declined")
    assert _count(google_app, "reservation.cancelled_in_google") == 0
    with google_app.app_context():  # done: the safety net has nothing left to send
        assert requeue_stale_pending(now=datetime.now(UTC) + timedelta(minutes=10)) == []


def _instances(app, room_id: int) -> list[Reservation]:
    with app.app_context():
        return list(db.session().scalars(sa.select(Reservation).where(Reservation.room_id == room_id)
                                         .order_by(Reservation.start_at)))


def test_a_google_series_released_three_times_running_is_declined_by_the_room_from_then_on(
        emulator, make_google_app, smtp_server):
    app = make_google_app(SMTP_URL=smtp_server.url, SYNC_WINDOW_DAYS_AHEAD=7)
    room_id = add_room(emulator, app)
    _require_checkin(app, room_id)
    start = soon()
    made = emulator.state.book(ALICE, ROOM, "Daily sync", rfc(start), rfc(start + timedelta(minutes=30)),
                               attendees=[BOB], recurrence=["RRULE:FREQ=DAILY;COUNT=10"])
    with app.app_context():
        sync_room(room_id)
    mirrored = _instances(app, room_id)
    assert 4 <= len(mirrored) < 10 and {r.series_id for r in mirrored} == {made["id"]}  # the first week's

    for day in range(3):  # nobody comes, three days running
        assert _deadline(app, mirrored[day].id, mirrored[day].start_at + timedelta(minutes=15)) == "released"
    run_jobs(app)

    # The organiser was warned after the second no-show, then told the series ended.
    subjects = [m["Subject"] for to, m in smtp_server.wait_for(5) if to == [ALICE]]
    assert subjects.index("Your series may end: Daily sync") < subjects.index("Series ended: Daily sync")
    later = _instances(app, room_id)[3:]
    assert [(r.status, r.release_reason) for r in later] == [(ReservationStatus.RELEASED,
                                                             ReleaseReason.SERIES_ENDED)] * (len(mirrored) - 3)
    # Google: the room declined each later instance on its own copy, with a note; the organiser's series,
    # its past instances and everyone else's answers are untouched, nothing deleted.
    for reservation in later:
        room_copy = emulator.state.person_event(ROOM, reservation.google_event_id)  # the room's copy of the instance
        room_entry = next(a for a in room_copy["attendees"] if a["email"] == ROOM)
        assert room_entry["responseStatus"] == "declined" and "series ended" in room_entry["comment"]
        organisers = emulator.state.person_event(ALICE, reservation.google_event_id)
        assert _room_answer(organisers) == "declined"
        assert {a["email"]: a["responseStatus"] for a in organisers["attendees"]}[BOB] == "needsAction"
        assert organisers["start"] == room_copy["start"] and organisers["status"] == "confirmed"
    assert _room_answer(emulator.state.person_event(ALICE, made["id"])) != "declined"
    assert not emulator.state.requests(calendar=ROOM, method="DELETE")

    # Instances beyond the first window are declined as the sync brings them in, and nothing is revived.
    wider = make_google_app(SMTP_URL=smtp_server.url, SYNC_WINDOW_DAYS_AHEAD=30)
    with wider.app_context():
        sync_room(room_id, full=True)
    run_jobs(wider)
    with wider.app_context():
        sync_room(room_id)
        sync_room(room_id, full=True)
    everything = _instances(wider, room_id)
    assert len(everything) == 10
    assert [r.release_reason for r in everything] == [ReleaseReason.NO_SHOW] * 3 + [ReleaseReason.SERIES_ENDED] * 7
    assert all(r.status == ReservationStatus.RELEASED and r.room_response == "declined" for r in everything)
    assert _count(wider, "reservation.series_ended") == 7


def test_our_series_released_three_times_running_leaves_the_room_calendar(emulator, google_app, room_id):
    start = soon()
    with google_app.app_context():
        made = booking.book(db.session(), google_app.config["ROOMBRIDGE"], booking.BookingRequest(
            room_id=room_id, organiser_email=ALICE, title="Daily sync", start=start,
            end=start + timedelta(minutes=30), recurrence=booking.Recurrence("daily", count=5),
            source=ReservationSource.WEB))
    ids = [r.id for r in made.reservations]
    run_jobs(google_app)
    assert len(_room_instances(google_app, start)) == 5
    for day in range(3):
        reservation = _reservation(google_app, ids[day])
        assert _deadline(google_app, ids[day], reservation.start_at + timedelta(minutes=15)) == "released"
    run_jobs(google_app)
    assert [_reservation(google_app, i).status for i in ids] == [ReservationStatus.RELEASED] * 3 + [
        ReservationStatus.CANCELLED] * 2
    # However publish writes a series (five events, or one recurring event), none of it is left in Google.
    assert _room_instances(google_app, start) == []


def _room_instances(app, start: datetime) -> list[dict]:
    """The room calendar's live events (single instances) from `start` on, as Google lists them."""
    from roombridge.gcal import CalendarGateway

    with app.app_context():
        listing = CalendarGateway.for_app(kind="sync").list_events(ROOM, time_min=start - timedelta(hours=1),
                                                                   time_max=start + timedelta(days=30))
        return [e for page in listing.pages() for e in page if e.get("status") != "cancelled"]


def _zone():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/London")


# --- processes: two schedulers, workers, and a worker killed mid-release ---------------------------


def _no_show_now(app, room_id: int) -> int:
    """A confirmed reservation (its event in Google) whose check-in deadline passed five minutes ago."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    with app.app_context(), unit_of_work(db.session()) as session:
        rid = make_reservation(session, session.get(Room, room_id), start, title="No-show",
                               organiser_email=ALICE).id
    with app.app_context():
        write_reservation(rid)
    assert _reservation(app, rid).status == ReservationStatus.CONFIRMED
    return rid


def _deletes(emulator) -> int:
    return len(emulator.state.requests(calendar=ROOM, method="DELETE"))


@pytest.mark.slow
def test_two_schedulers_and_two_workers_release_a_no_show_exactly_once(emulator, google_app, room_id):
    rid = _no_show_now(google_app, room_id)
    env = worker_env(google_app, SCHEDULER_TICK_SECONDS="0.5")
    schedulers = [subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "scheduler"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
                  for _ in range(2)]
    workers = [start_worker(google_app, "write", "default", "sync", "channels", SCHEDULER_TICK_SECONDS="0.5")
               for _ in range(2)]
    try:
        with google_app.app_context():
            conn = redis()
            # Several slots of the release job have run, after the release, on either worker.
            wait_until(lambda: _reservation(google_app, rid).status == ReservationStatus.RELEASED and
                       not _live_events(emulator), timeout=60, what="the release to reach Google")
            seen = len(conn.keys("roombridge:schedule:release-no-shows:*"))
            wait_until(lambda: len(conn.keys("roombridge:schedule:release-no-shows:*")) >= seen + 3, timeout=60,
                       what="three more release runs")
    finally:
        for process in schedulers + workers:
            stop_worker(process)

    assert _count(google_app, "reservation.released") == 1
    assert _deletes(emulator) == 1


@pytest.mark.slow
def test_a_worker_killed_mid_release_releases_nothing_and_the_next_run_releases_once(
        emulator, google_app, room_id):
    rid = _no_show_now(google_app, room_id)
    with google_app.app_context():
        job = release_no_shows.enqueue()
    lock = hold_write_lock(google_app)
    worker = start_worker(google_app, "default", "write")
    try:
        with google_app.app_context():
            wait_until(lambda: job.get_status(refresh=True) == "started", timeout=30, what="the release job")
        if lock.dialect.name == "postgresql":
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'reservations'::regclass"
            probe = sa.create_engine(google_app.config["ROOMBRIDGE"].DATABASE_URL)
            with probe.connect() as conn:
                wait_until(lambda: conn.execute(sa.text(waiting)).scalar(), timeout=30, what="the UPDATE to wait")
            probe.dispose()
        else:
            time.sleep(1.0)  # SQLite: its BEGIN IMMEDIATE waits on the lock (busy_timeout 30 s); let it
    finally:
        kill_worker(worker)
        lock.rollback()
        lock.close()

    killed = _reservation(google_app, rid)
    assert (killed.status, killed.missed_checkin_at) == (ReservationStatus.CONFIRMED, None)  # nothing half-done
    assert len(_live_events(emulator)) == 1

    with google_app.app_context():
        release_no_shows.enqueue()
        release_no_shows.enqueue()
    restarted = start_worker(google_app, "default", "write", burst=True)
    assert restarted.wait(60) == 0

    assert _reservation(google_app, rid).status == ReservationStatus.RELEASED
    assert _count(google_app, "reservation.released") == 1
    assert (_deletes(emulator), _live_events(emulator)) == (1, [])

"""The sync engine against the emulator, and the Redis coalescing and lock, without HTTP to the app."""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from roombridge import booking, db
from roombridge.gcal import RESERVATION_PROPERTY, CalendarGateway, event_id_for
from roombridge.models import (
    AuditEntry,
    Reservation,
    ReservationSource,
    ReservationStatus,
    Room,
    RoomSyncState,
    SkippedEvent,
    SkipReason,
)
from roombridge.notifications import request_sync
from roombridge.queue import queue, redis
from roombridge.sync import RoomLock, sync_room_now
from tests.factories import make_reservation
from tests.sync_support import ROOM, add_room, reservations, rfc, soon, sync_runs
from tests.webapp.signin import sign_in
from webapp.schemas import reservation_json


@pytest.fixture
def room_id(emulator, google_app):
    return add_room(emulator, google_app)


def sync(app, room_id, full=False, **kwargs):
    with app.app_context():
        session = db.session()
        room = session.get(Room, room_id)
        gateway = CalendarGateway.for_app(kind="sync")
        return sync_room_now(session, gateway, room, app.config["ROOMBRIDGE"], full=full, **kwargs)


def test_google_booking_is_mirrored_then_moved_then_cancelled(emulator, google_app, room_id):
    start = soon()
    event = emulator.state.book("bob@example.com", ROOM, "Design review", rfc(start), rfc(start + timedelta(hours=1)),
                                attendees=["carol@example.com"])
    report = sync(google_app, room_id)
    assert report.full and report.actions == {"create": 1}
    [mirror] = reservations(google_app, room_id)
    assert (mirror.source, mirror.status) == (ReservationSource.GOOGLE, ReservationStatus.CONFIRMED)
    assert (mirror.start_at, mirror.end_at) == (start, start + timedelta(hours=1))
    assert mirror.organiser_email == "bob@example.com" and mirror.attendees == ["carol@example.com"]
    assert mirror.room_response == "accepted" and mirror.google_event_id == event["id"]

    emulator.state.patch_person_event("bob@example.com", event["id"], {"start": rfc(start + timedelta(hours=2)),
                                                                        "end": rfc(start + timedelta(hours=3))})
    report = sync(google_app, room_id)
    assert not report.full and report.actions == {"update": 1}
    [mirror] = reservations(google_app, room_id)
    assert mirror.start_at == start + timedelta(hours=2)

    emulator.state.delete_person_event("bob@example.com", event["id"])
    assert sync(google_app, room_id).actions == {"cancel": 1}
    [mirror] = reservations(google_app, room_id)
    assert mirror.status == ReservationStatus.CANCELLED
    # Nothing changed since: an incremental sync lists nothing and changes nothing.
    assert sync(google_app, room_id).changes == 0


def test_weekly_series_gives_one_reservation_per_instance(emulator, google_app, room_id):
    start = soon()
    emulator.state.book("bob@example.com", ROOM, "Weekly", rfc(start), rfc(start + timedelta(minutes=30)),
                        recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    sync(google_app, room_id)
    found = reservations(google_app, room_id)
    assert [r.start_at for r in found] == [start + timedelta(weeks=n) for n in range(4)]
    assert len({r.google_event_id for r in found}) == 4
    assert {r.google_recurring_event_id for r in found} == {found[0].series_id}


def our_confirmed_booking(app, room_id, start):
    """One of our reservations, written to the room calendar as the push job writes it."""
    with app.app_context():
        session = db.session()
        mine = make_reservation(session, session.get(Room, room_id), start=start, status=ReservationStatus.CONFIRMED)
        session.commit()
        event = CalendarGateway.for_app(kind="write").insert_event(ROOM, event_id_for(mine.id), {
            "summary": "Planning", "start": {"dateTime": rfc(start)},
            "end": {"dateTime": rfc(start + timedelta(hours=1))},
            "extendedProperties": {"private": {RESERVATION_PROPERTY: str(mine.id)}}})
        # As the push job leaves it: where the event is and which version we wrote.
        mine.google_event_id, mine.google_calendar_id, mine.google_etag = event["id"], ROOM, event["etag"]
        session.commit()
        return mine.id, event


def test_our_own_reservation_is_not_imported_and_a_move_in_google_is_applied(emulator, google_app, room_id):
    start = soon()
    mine_id, event = our_confirmed_booking(google_app, room_id, start)

    assert sync(google_app, room_id).changes == 0
    assert [r.id for r in reservations(google_app, room_id)] == [mine_id]

    emulator.state.admin_patch_event(ROOM, event["id"], {"end": rfc(start + timedelta(minutes=30))})
    assert sync(google_app, room_id).actions == {"update": 1}
    [moved] = reservations(google_app, room_id)
    assert moved.id == mine_id and moved.source == ReservationSource.API
    assert moved.end_at == start + timedelta(minutes=30) and moved.status == ReservationStatus.CONFIRMED
    with google_app.app_context():
        entries = db.session().query(AuditEntry).filter_by(actor="google", entity_id=str(mine_id)).all()
        assert [e.action for e in entries] == ["reservation.changed_in_google"]
    # The organiser is told (room mode: the app mails an iMIP update).
    with google_app.app_context():
        assert [(j.func_name, j.args) for j in queue("default").jobs] == [
            ("jobs.reservations.send_invitations", (mine_id,))]

    emulator.state.admin_delete_event(ROOM, event["id"])
    sync(google_app, room_id)
    [gone] = reservations(google_app, room_id)
    assert gone.status == ReservationStatus.CANCELLED and gone.status_reason == "deleted in Google"


def test_booking_in_google_over_a_pending_reservation_is_kept_as_a_conflict(emulator, google_app, room_id):
    start = soon()
    with google_app.app_context():
        session = db.session()
        pending = make_reservation(session, session.get(Room, room_id), start=start)  # not yet in Google
        session.commit()
        pending_id = pending.id
    emulator.state.book("bob@example.com", ROOM, "Sneaky", rfc(start + timedelta(minutes=30)),
                        rfc(start + timedelta(minutes=90)))
    sync(google_app, room_id)
    statuses = {r.id: (r.status, r.conflict_with_id) for r in reservations(google_app, room_id)}
    assert statuses.pop(pending_id) == (ReservationStatus.PENDING, None)
    assert list(statuses.values()) == [(ReservationStatus.CONFLICT, pending_id)]


def test_a_conflict_takes_the_slot_once_our_event_is_deleted_in_google(emulator, google_app, room_id):
    start = soon()
    mine_id, event = our_confirmed_booking(google_app, room_id, start)
    # Someone writes straight onto the room calendar over our booking.
    emulator.state.insert_as(ROOM, "bob@example.com", {"summary": "Over it", "start": rfc(start),
                                                       "end": rfc(start + timedelta(minutes=30))})
    sync(google_app, room_id)
    [theirs] = [r for r in reservations(google_app, room_id) if r.id != mine_id]
    assert (theirs.status, theirs.conflict_with_id) == (ReservationStatus.CONFLICT, mine_id)

    emulator.state.admin_delete_event(ROOM, event["id"])
    sync(google_app, room_id)
    statuses = {r.id: r.status for r in reservations(google_app, room_id)}
    assert statuses == {mine_id: ReservationStatus.CANCELLED, theirs.id: ReservationStatus.CONFIRMED}


def test_declined_and_all_day_events(emulator, google_app, room_id):
    start = soon()
    emulator.state.book("bob@example.com", ROOM, "First", rfc(start), rfc(start + timedelta(hours=1)))
    emulator.state.book("eve@example.com", ROOM, "Clash", rfc(start), rfc(start + timedelta(hours=1)))  # declined
    day = (start + timedelta(days=2)).date()
    emulator.state.book("dan@example.com", ROOM, "Offsite", day.isoformat(), (day + timedelta(days=1)).isoformat())
    sync(google_app, room_id)
    found = reservations(google_app, room_id)
    assert [r.title for r in found] == ["First", "Offsite"]
    offsite = found[1]
    assert offsite.all_day and (offsite.end_at - offsite.start_at) == timedelta(days=1)


def test_forced_410_runs_a_full_sync_and_cancels_what_google_no_longer_has(emulator, google_app, room_id):
    start = soon()
    keep = emulator.state.book("bob@example.com", ROOM, "Keep", rfc(start), rfc(start + timedelta(hours=1)))
    drop = emulator.state.book("bob@example.com", ROOM, "Drop", rfc(start + timedelta(hours=2)),
                               rfc(start + timedelta(hours=3)))
    sync(google_app, room_id)
    emulator.state.delete_person_event("bob@example.com", drop["id"])
    emulator.state.book("bob@example.com", ROOM, "New", rfc(start + timedelta(hours=4)),
                        rfc(start + timedelta(hours=5)))
    emulator.state.expire_sync_tokens(ROOM)

    report = sync(google_app, room_id)
    assert report.full
    found = {r.title: r.status for r in reservations(google_app, room_id)}
    assert found == {"Keep": ReservationStatus.CONFIRMED, "Drop": ReservationStatus.CANCELLED,
                     "New": ReservationStatus.CONFIRMED}
    assert [r.google_event_id for r in reservations(google_app, room_id) if r.title == "Keep"] == [keep["id"]]
    with google_app.app_context():
        state = db.session().get(RoomSyncState, room_id)
        assert state.sync_token and state.last_full_sync_at is not None
    assert sync(google_app, room_id).changes == 0
    # Full syncs again, on the same connection: the seen-events table starts empty each time.
    for _ in range(2):
        assert sync(google_app, room_id, full=True).changes == 0
    assert {r.title: r.status for r in reservations(google_app, room_id)} == found


def test_repeating_a_sync_from_the_old_token_is_harmless(emulator, google_app, room_id):
    """What a crash before the commit amounts to: the same changes applied again."""
    start = soon()
    sync(google_app, room_id)
    with google_app.app_context():
        old_token = db.session().get(RoomSyncState, room_id).sync_token
    for n in range(3):
        emulator.state.book("bob@example.com", ROOM, f"B{n}", rfc(start + timedelta(hours=2 * n)),
                            rfc(start + timedelta(hours=2 * n + 1)))
    sync(google_app, room_id, page_size=1)
    with google_app.app_context():
        db.session().get(RoomSyncState, room_id).sync_token = old_token
        db.session().commit()
    report = sync(google_app, room_id, page_size=1)
    assert report.pages >= 3 and report.changes == 0
    assert [r.title for r in reservations(google_app, room_id)] == ["B0", "B1", "B2"]


# --- coalescing and the lock (Redis only) -----------------------------------------------------------


def test_requests_coalesce_into_one_queued_job(app):
    with app.app_context():
        assert request_sync(7) is True
        assert [request_sync(7) for _ in range(20)] == [False] * 20
        assert request_sync(8) is True
        assert sorted(job.args[0] for job in queue("sync").jobs) == [7, 8]


def test_a_full_request_is_not_swallowed_by_a_queued_incremental_one(app):
    with app.app_context():
        assert request_sync(7) is True
        assert request_sync(7, full=True) is False
        assert redis().get("roombridge:sync:full:7") == b"1"
        assert len(queue("sync").jobs) == 1


def test_room_lock_is_exclusive_and_expires_when_its_holder_dies(app):
    with app.app_context():
        holder = RoomLock(redis(), 7, ttl_seconds=0.3)
        assert holder.acquire()
        other = RoomLock(redis(), 7, ttl_seconds=0.3)
        time.sleep(0.5)  # the heartbeat keeps it past its TTL
        assert not other.acquire()
        holder._stop.set()  # the holder "dies": no more renewals, no release
        holder._thread.join()
        # Unrenewed, the dead holder's lock lapses by its own TTL (Redis counts it down), not by a release.
        assert 0 < redis().pttl("roombridge:sync:lock:7") <= 300
        assert other.acquire(wait_seconds=2)
        holder.release()  # a late release must not free the lock someone else now holds
        assert redis().get("roombridge:sync:lock:7") == other.value.encode()
        other.release()
        assert redis().get("roombridge:sync:lock:7") is None


def test_sync_runs_are_counted_from_the_emulator_log(emulator, google_app, room_id):
    sync(google_app, room_id, page_size=1)
    emulator.state.book("bob@example.com", ROOM, "X", rfc(soon()), rfc(soon() + timedelta(hours=1)))
    emulator.state.book("bob@example.com", ROOM, "Y", rfc(soon(hour=14)), rfc(soon(hour=15)))
    sync(google_app, room_id, page_size=1)
    assert sync_runs(emulator) == 2


# --- what a Google event can do (issues #14 and #19) -----------------------------------------------


def test_nul_and_lone_surrogates_from_google_are_mirrored_clean_and_the_room_goes_on(emulator, google_app, room_id):
    start = soon()
    event = emulator.state.book("bob@example.com", ROOM, "Board\x00meeting \ud800", rfc(start),
                                rfc(start + timedelta(hours=1)), attendees=["carol@example.com"],
                                description="Agenda\x00 \udfff")
    attendees = [dict(a, displayName="C\x00arol \udc80") if a["email"] == "carol@example.com" else a
                 for a in event["attendees"]]
    emulator.state.patch_person_event("bob@example.com", event["id"], {"attendees": attendees,
                                                                        "location": "HQ\x00"})
    assert sync(google_app, room_id).actions == {"create": 1}
    [mirror] = reservations(google_app, room_id)
    assert (mirror.title, mirror.description) == ("Boardmeeting \ufffd", "Agenda \ufffd")
    assert mirror.attendees == ["carol@example.com"]

    # A later change on the same room is mirrored too: the room's sync did not stall.
    later = emulator.state.book("dave@example.com", ROOM, "Plain", rfc(start + timedelta(hours=2)),
                                rfc(start + timedelta(hours=3)))
    report = sync(google_app, room_id)
    assert report.actions == {"create": 1} and report.skipped == 0
    assert [r.google_event_id for r in reservations(google_app, room_id)] == [event["id"], later["id"]]


def test_a_crafted_event_id_neither_adopts_our_reservation_nor_stops_the_room(emulator, google_app, room_id):
    start = soon()
    with google_app.app_context():
        session = db.session()
        pending = make_reservation(session, session.get(Room, room_id), start=start, title="Ours",
                                   status=ReservationStatus.PENDING)
        failed = make_reservation(session, session.get(Room, room_id), start=start + timedelta(hours=2),
                                  title="Ours too", status=ReservationStatus.FAILED)
        session.commit()
        pending_id, failed_id = pending.id, failed.id
    crafted = [
        # The very id our write would give each reservation, with our property copied but unsigned.
        {"id": event_id_for(pending_id), "summary": "Taken over", "start": rfc(start + timedelta(days=1)),
         "end": rfc(start + timedelta(days=1, hours=1)),
         "extendedProperties": {"private": {RESERVATION_PROPERTY: str(pending_id)}}},
        {"id": event_id_for(failed_id, 1), "summary": "Mine now", "start": rfc(start + timedelta(hours=2)),
         "end": rfc(start + timedelta(hours=3))},
        # base32hex("roombridge:²:0"): '²'.isdigit() is True and int('²') raises.
        {"id": base64.b32hexencode("roombridge:²:0".encode()).decode().rstrip("=").lower(), "summary": "Odd",
         "start": rfc(start + timedelta(hours=5)), "end": rfc(start + timedelta(hours=6))},
    ]
    for body in crafted:
        emulator.state.insert_as(ROOM, "mallory@example.com", body)
    report = sync(google_app, room_id)
    assert report.skipped == 0
    with google_app.app_context():
        session = db.session()
        ours = session.get(Reservation, pending_id), session.get(Reservation, failed_id)
        assert [(r.title, r.start_at, r.google_event_id) for r in ours] == [
            ("Ours", start, None), ("Ours too", start + timedelta(hours=2), None)]
        imported = session.scalars(sa.select(Reservation).where(Reservation.source == ReservationSource.GOOGLE)
                                   .order_by(Reservation.start_at)).all()
    # Each is a Google booking of its own; the one over our failed reservation is a conflict for admins.
    assert [(r.title, r.status) for r in imported] == [
        ("Mine now", ReservationStatus.CONFLICT), ("Odd", ReservationStatus.CONFIRMED),
        ("Taken over", ReservationStatus.CONFIRMED)]
    with google_app.app_context():
        assert db.session().get(RoomSyncState, room_id).last_error is None


def test_an_event_that_cannot_be_applied_is_skipped_shown_to_admins_and_the_room_goes_on(
        emulator, google_app, room_id):
    assert sync(google_app, room_id).full  # the room's token: what follows comes as changes
    with google_app.app_context():  # the room's zone here differs from its calendar's in Google
        session = db.session()
        session.get(Room, room_id).time_zone = "Asia/Tokyo"
        session.commit()
    # All day on 1 January of year 1: fine in the calendar's London, but in the room's Tokyo (UTC+9) it
    # begins before the first instant Python can hold.
    bad = emulator.state.insert_as(ROOM, "mallory@example.com", {
        "summary": "Year one", "start": {"date": "0001-01-01"}, "end": {"date": "0001-01-02"}})
    start = soon()
    good = emulator.state.book("bob@example.com", ROOM, "Fine", rfc(start), rfc(start + timedelta(hours=1)))

    report = sync(google_app, room_id)
    assert report.skipped == 1 and report.actions == {"create": 1}
    assert [r.google_event_id for r in reservations(google_app, room_id)] == [good["id"]]
    with google_app.app_context():
        session = db.session()
        [skipped] = session.scalars(sa.select(SkippedEvent)).all()
        assert (skipped.room_id, skipped.event_id, skipped.reason) == (room_id, bad["id"], SkipReason.UNREADABLE)
        state = session.get(RoomSyncState, room_id)
        assert state.last_error is None and state.sync_count == 2
    # The token advanced: the next sync lists nothing, and one more change comes through.
    assert sync(google_app, room_id).events == 0
    emulator.state.patch_person_event("bob@example.com", good["id"], {"summary": "Fine, renamed"})
    assert sync(google_app, room_id).actions == {"update": 1}

    client = google_app.test_client()
    sign_in(client, "admin@example.com")
    overview = client.get("/admin/").get_data(as_text=True)
    assert '<td class="skipped"><a' in overview
    page = client.get(f"/admin/rooms/{room_id}").get_data(as_text=True)
    assert bad["id"] in page and 'data-skip-reason="unreadable"' in page

    # Deleted in Google: it leaves the admins' list with the next sync.
    emulator.state.admin_delete_event(ROOM, bad["id"])
    sync(google_app, room_id)
    with google_app.app_context():
        assert db.session().scalars(sa.select(SkippedEvent)).all() == []


def test_a_private_google_event_shows_as_busy_to_everyone_but_its_people_and_admins(emulator, google_app, room_id):
    start = soon()
    event = emulator.state.book("bob@example.com", ROOM, "Layoffs", rfc(start), rfc(start + timedelta(hours=1)),
                                attendees=["carol@example.com"], description="do not share")
    emulator.state.patch_person_event("bob@example.com", event["id"], {"visibility": "private"})
    sync(google_app, room_id)
    [mirror] = reservations(google_app, room_id)
    assert mirror.private and mirror.title == "Layoffs"

    def room_page(email: str) -> str:
        client = google_app.test_client()
        sign_in(client, email)
        return client.get(f"/rooms/{room_id}", query_string={"date": start.astimezone(
            ZoneInfo("Europe/London")).date().isoformat()}).get_data(as_text=True)

    for email in ("bob@example.com", "carol@example.com", "admin@example.com"):  # organiser, attendee, admin
        assert "Busy: Layoffs" in room_page(email), email
    other = room_page("alice@example.com")
    assert "Layoffs" not in other and "do not share" not in other and "Busy (Google)" in other
    with google_app.app_context():
        session = db.session()
        reservation = session.get(Reservation, mirror.id)
        assert booking.title_for(reservation, "alice@example.com") == "Busy"
        hidden = reservation_json(reservation, viewer_email="alice@example.com")
        shown = reservation_json(reservation, viewer_email="admin@example.com", viewer_is_admin=True)
    assert (hidden["title"], hidden["description"], hidden["attendees"]) == ("Busy", "", [])
    assert (shown["title"], shown["attendees"]) == ("Layoffs", ["carol@example.com"])

    # A later change of visibility in Google is mirrored: confidential is private too; default is not.
    for visibility, private in (("default", False), ("confidential", True)):
        emulator.state.patch_person_event("bob@example.com", event["id"], {"visibility": visibility})
        sync(google_app, room_id)
        assert reservations(google_app, room_id)[0].private is private, visibility

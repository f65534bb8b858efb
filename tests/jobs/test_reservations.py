"""The Google write of reservations, against the emulator through the real client, and the mail."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobs.reservations import requeue_stale_pending, write_reservation
from roombridge import booking, db, publish
from roombridge.gcal import RESERVATION_PROPERTY, event_id_for
from roombridge.models import Reservation, ReservationStatus, Room
from roombridge.queue import queue
from tests.factories import make_reservation, make_room
from tests.support import SERVICE_ACCOUNT, run_jobs

ROOM = "room-orion@resource.calendar.google.com"
OTHER_ROOM = "room-vega@resource.calendar.google.com"
LONDON = ZoneInfo("Europe/London")


def slot(days: int = 3, hour: int = 10, minutes: int = 60) -> tuple[datetime, datetime]:
    day = datetime.now(LONDON).date() + timedelta(days=days)
    start = datetime.combine(day, time(hour), LONDON)
    return start, start + timedelta(minutes=minutes)


@pytest.fixture
def google(make_app, emulator, service_account_file, smtp_server):
    """App in room mode on the emulator, with two shared room calendars and mail to a local SMTP server."""
    for calendar_id, name in ((ROOM, "Orion"), (OTHER_ROOM, "Vega")):
        emulator.state.add_calendar(calendar_id, name, kind="room", time_zone="Europe/London")
        emulator.state.share(calendar_id, SERVICE_ACCOUNT, "writer")
    app = make_app(
        GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file,
        GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
        GOOGLE_RETRY_BASE_SECONDS=0.01,
        SMTP_URL=smtp_server.url,
    )
    with app.app_context():
        session = db.session()
        rooms = [make_room(session, calendar_id=ROOM, name="Orion"), make_room(session, calendar_id=OTHER_ROOM,
                                                                               name="Vega")]
        session.commit()
        room_ids = [r.id for r in rooms]
    return app, room_ids


def book(app, room_id, start, end, **fields):
    with app.app_context():
        result = booking.book(db.session(), app.config["ROOMBRIDGE"], booking.BookingRequest(
            room_id=room_id, organiser_email=fields.pop("organiser_email", "alice@example.com"),
            title=fields.pop("title", "Planning"), start=start, end=end, **fields))
        return result.reservations[0].id


def load(app, reservation_id) -> Reservation:
    with app.app_context():
        return db.session().get(Reservation, reservation_id)


def live_events(emulator, calendar_id):
    return [e for e in emulator.state.raw_events(calendar_id) if e.get("status") != "cancelled"]


def test_booking_edit_cancel_round_trip_with_imip_mail(google, emulator, smtp_server):
    app, (room_id, other_room_id) = google
    start, end = slot()
    rid = book(app, room_id, start, end, attendees=["bob@example.com", "carol@example.com"])
    run_jobs(app, queues=("write", "default"))

    reservation = load(app, rid)
    assert reservation.status == ReservationStatus.CONFIRMED
    [event] = live_events(emulator, ROOM)
    assert event["id"] == event_id_for(rid, 0) == reservation.google_event_id
    assert event["extendedProperties"]["private"][RESERVATION_PROPERTY] == str(rid)
    assert "attendees" not in event  # room mode: Google forbids them for the service account
    assert "bob@example.com" in event["description"]  # the room calendar shows who is invited
    # ... and the sync engine gets the reservation's own description back from it, unchanged.
    assert publish.description_from_event(event["description"]) == reservation.description == ""
    assert datetime.fromisoformat(event["start"]["dateTime"]) == start

    [invite] = smtp_server.invitations(1)
    assert sorted(invite.recipients) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert invite.method == "REQUEST"
    assert invite.uid == f"{event['id']}@google.com" == event.get("iCalUID", f"{event['id']}@google.com")
    assert invite.organiser == ROOM
    assert sorted(invite.attendees) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert invite.start == start

    # An edit moves the event.
    with app.app_context():
        booking.edit(db.session(), app.config["ROOMBRIDGE"], rid, actor_email="alice@example.com",
                     actor_is_admin=False, start=start + timedelta(hours=2), end=end + timedelta(hours=2))
    run_jobs(app, queues=("write", "default"))
    [event] = live_events(emulator, ROOM)
    assert datetime.fromisoformat(event["start"]["dateTime"]) == start + timedelta(hours=2)
    [_, update] = smtp_server.invitations(2)
    assert (update.method, update.uid) == ("REQUEST", invite.uid) and update.sequence > invite.sequence
    assert update.start == start + timedelta(hours=2)

    # Cancelling removes it and mails a CANCEL with the same UID.
    with app.app_context():
        booking.cancel(db.session(), app.config["ROOMBRIDGE"], rid, actor_email="alice@example.com",
                       actor_is_admin=False)
    run_jobs(app, queues=("write", "default"))
    assert live_events(emulator, ROOM) == []
    [*_, cancel] = smtp_server.invitations(3)
    assert sorted(cancel.recipients) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert (cancel.method, cancel.uid, str(cancel.event["STATUS"])) == ("CANCEL", invite.uid, "CANCELLED")
    assert cancel.sequence > update.sequence
    assert len(emulator.state.requests(calendar=ROOM, method="DELETE")) == 1


def test_a_move_to_another_room_deletes_there_and_inserts_here(google, emulator):
    app, (room_id, other_room_id) = google
    start, end = slot()
    rid = book(app, room_id, start, end)
    run_jobs(app, queues=("write",))
    with app.app_context():
        booking.edit(db.session(), app.config["ROOMBRIDGE"], rid, actor_email="alice@example.com",
                     actor_is_admin=False, room_id=other_room_id)
    run_jobs(app, queues=("write",))
    assert live_events(emulator, ROOM) == []
    [moved] = live_events(emulator, OTHER_ROOM)
    reservation = load(app, rid)
    assert moved["id"] == event_id_for(rid, 1) == reservation.google_event_id
    assert (reservation.status, reservation.google_calendar_id) == (ReservationStatus.CONFIRMED, OTHER_ROOM)


@pytest.fixture
def delegated(make_app, emulator, service_account_file):
    """App in delegated mode (acting as booker@example.com) on the emulator, with one room: (app, room id)."""
    emulator.state.set_delegation(SERVICE_ACCOUNT, True)
    emulator.state.add_user("booker@example.com")
    emulator.state.add_calendar(ROOM, "Orion", kind="room")
    emulator.state.share(ROOM, "booker@example.com", "writer")
    app = make_app(GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file, GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
                   GOOGLE_DELEGATED_USER="booker@example.com")
    with app.app_context():
        room_id = make_room(db.session(), calendar_id=ROOM).id
        db.session().commit()
    return app, room_id


def test_delegated_mode_puts_booker_and_attendees_on_the_event(delegated, emulator):
    app, room_id = delegated
    rid = book(app, room_id, *slot(), attendees=["bob@example.com"])
    run_jobs(app, queues=("write",))
    assert load(app, rid).status == ReservationStatus.CONFIRMED
    [event] = live_events(emulator, ROOM)
    assert {a["email"] for a in event["attendees"]} >= {"alice@example.com", "bob@example.com"}
    [insert] = emulator.state.requests(calendar=ROOM, method="POST")
    assert insert["send_updates"] == "all"
    with app.app_context():
        assert queue("default").count == 0  # Google invites; we send no mail


def test_a_retried_job_after_a_500_creates_exactly_one_event(google, emulator):
    app, (room_id, _) = google
    # More 500s than the gateway retries within one call: the job fails and RQ retries it.
    emulator.state.add_fault(500, times=4, method="POST", calendar=ROOM)
    rid = book(app, room_id, *slot())
    run_jobs(app, queues=("write",))
    assert load(app, rid).status == ReservationStatus.PENDING
    with app.app_context():
        [job_id] = queue("write").scheduled_job_registry.get_job_ids()
        job = queue("write").fetch_job(job_id)
        assert job.retries_left == 4
        queue("write").scheduled_job_registry.remove(job)
        queue("write").enqueue_job(job)  # its backoff has passed, as far as this test cares
    run_jobs(app, queues=("write",))
    assert load(app, rid).status == ReservationStatus.CONFIRMED
    assert [e["id"] for e in live_events(emulator, ROOM)] == [event_id_for(rid, 0)]


def test_insert_is_idempotent_when_google_stored_it_but_we_did_not_hear(google, emulator):
    app, (room_id, _) = google
    rid = book(app, room_id, *slot())
    with app.app_context():
        write_reservation(rid)
        # As if the answer was lost: run the job again from "pending, nothing recorded".
        reservation = db.session().get(Reservation, rid)
        reservation.status, reservation.google_calendar_id = ReservationStatus.PENDING, None
        db.session().commit()
        assert write_reservation(rid) == "inserted"
    assert len(live_events(emulator, ROOM)) == 1
    assert load(app, rid).status == ReservationStatus.CONFIRMED


def test_pushes_of_one_reservation_take_turns_across_workers(google, emulator, monkeypatch):
    import threading

    import jobs.reservations
    from roombridge.queue import RedisLock, redis

    app, (room_id, _) = google
    rid = book(app, room_id, *slot())
    emulator.state.clear_requests()
    with app.app_context():
        other_worker = RedisLock(redis(), f"roombridge:write:lock:{rid}", 30)
        assert other_worker.acquire()
    outcome = {}
    pushing = threading.Thread(target=lambda: outcome.setdefault("done", run_with(app, rid)))
    pushing.start()
    pushing.join(0.5)
    assert pushing.is_alive() and emulator.state.requests(calendar=ROOM) == []  # waits its turn
    other_worker.release()
    pushing.join(10)
    assert outcome["done"] == "inserted" and load(app, rid).status == ReservationStatus.CONFIRMED

    # A worker that never lets go: the job gives up with a retriable error, for RQ to retry later.
    monkeypatch.setattr(jobs.reservations, "WRITE_LOCK_WAIT_SECONDS", 0.1)
    with app.app_context():
        assert RedisLock(redis(), f"roombridge:write:lock:{rid}", 30).acquire()
        with pytest.raises(jobs.reservations.WriteBusy):
            write_reservation(rid)


def test_mails_of_one_reservation_take_turns_across_workers(google, monkeypatch):
    import jobs.reservations
    from roombridge.queue import RedisLock, redis

    app, (room_id, _) = google
    rid = book(app, room_id, *slot())
    monkeypatch.setattr(jobs.reservations, "MAIL_LOCK_WAIT_SECONDS", 0.1)
    with app.app_context():
        other_worker = RedisLock(redis(), f"roombridge:mail:lock:{rid}", 30)
        assert other_worker.acquire()
        with pytest.raises(jobs.reservations.MailBusy):  # RQ retries it later
            jobs.reservations.send_invitations(rid)
        other_worker.release()
        assert jobs.reservations.send_invitations(rid) == "nothing to send"  # pending: Google has nothing yet


def run_with(app, reservation_id):
    with app.app_context():
        return write_reservation(reservation_id)


def test_a_permanent_403_leaves_the_reservation_failed_with_its_reason(google, emulator):
    app, (room_id, _) = google
    emulator.state.add_fault(403, times=1, method="POST", calendar=ROOM, reason="forbiddenForServiceAccounts",
                             message="Service accounts cannot invite attendees")
    rid = book(app, room_id, *slot())
    run_jobs(app, queues=("write",))
    reservation = load(app, rid)
    assert reservation.status == ReservationStatus.FAILED
    assert reservation.status_reason.startswith("forbiddenForServiceAccounts")
    assert live_events(emulator, ROOM) == []
    with app.app_context():  # an admin retries once the cause is fixed
        booking.retry_write(db.session(), rid, actor_email="admin@example.com", actor_is_admin=True)
    run_jobs(app, queues=("write",))
    assert load(app, rid).status == ReservationStatus.CONFIRMED


def test_requeue_stale_pending_recovers_a_lost_job(google, emulator):
    app, (room_id, _) = google
    with app.app_context():
        session = db.session()
        room = session.get(Room, room_id)
        start, _ = slot()
        lost = make_reservation(session, room, start.astimezone(UTC))
        fresh = make_reservation(session, room, start.astimezone(UTC) + timedelta(hours=2))
        session.commit()
        later = datetime.now(UTC) + timedelta(minutes=10)
        fresh.updated_at = later  # touched "just now" as seen from `later`: its job may still be running
        session.commit()
        assert requeue_stale_pending(now=later) == [lost.id]
        assert requeue_stale_pending(now=later) == []  # not again within the guard period
    run_jobs(app, queues=("write",))
    assert load(app, lost.id).status == ReservationStatus.CONFIRMED
    assert load(app, fresh.id).status == ReservationStatus.PENDING


def test_attendees_dropped_by_an_edit_get_a_cancel(google, emulator, smtp_server):
    app, (room_id, _) = google
    rid = book(app, room_id, *slot(), attendees=["bob@example.com", "carol@example.com"])
    run_jobs(app, queues=("write", "default"))
    smtp_server.wait_for(1)
    with app.app_context():
        booking.edit(db.session(), app.config["ROOMBRIDGE"], rid, actor_email="alice@example.com",
                     actor_is_admin=False, attendees=["bob@example.com"])
    run_jobs(app, queues=("write", "default"))
    [invite, cancel, update] = smtp_server.invitations(3)
    # RFC 5546 3.2.5: the removed attendee gets a CANCEL that lists them; the others the update.
    assert (cancel.method, cancel.recipients, cancel.attendees) == ("CANCEL", ["carol@example.com"],
                                                                    ["carol@example.com"])
    assert (update.method, sorted(update.recipients)) == ("REQUEST", ["alice@example.com", "bob@example.com"])
    assert invite.uid == cancel.uid == update.uid and cancel.sequence == update.sequence > invite.sequence


def edit(app, reservation_id, **changes):
    with app.app_context():
        booking.edit(db.session(), app.config["ROOMBRIDGE"], reservation_id, actor_email="alice@example.com",
                     actor_is_admin=False, **changes)


def cancel(app, reservation_id):
    with app.app_context():
        booking.cancel(db.session(), app.config["ROOMBRIDGE"], reservation_id, actor_email="alice@example.com",
                       actor_is_admin=False)


def test_room_mode_mails_follow_a_booking_moved_trimmed_and_cancelled(google, emulator, smtp_server):
    """Book; move to another room; remove an attendee; cancel: every mail as a strict client reads it."""
    app, (room_id, other_room_id) = google
    start, end = slot()
    rid = book(app, room_id, start, end, title="Rétro", attendees=["bob@example.com", "carol@example.com"])
    run_jobs(app, queues=("write", "default"))
    [invite] = smtp_server.invitations(1)
    assert (invite.method, invite.organiser, invite.location) == ("REQUEST", ROOM, "Orion")

    edit(app, rid, room_id=other_room_id)
    run_jobs(app, queues=("write", "default"))
    [moved] = live_events(emulator, OTHER_ROOM)
    [_, old_cancel, new_invite] = smtp_server.invitations(3)
    # The old event's CANCEL: its own UID, organiser and location, a higher SEQUENCE, to who had it.
    assert (old_cancel.method, old_cancel.uid, old_cancel.organiser, old_cancel.location) == (
        "CANCEL", invite.uid, ROOM, "Orion")
    assert old_cancel.sequence > invite.sequence
    assert sorted(old_cancel.recipients) == sorted(invite.recipients)
    assert (new_invite.method, new_invite.uid, new_invite.organiser, new_invite.location) == (
        "REQUEST", f"{moved['id']}@google.com", OTHER_ROOM, "Vega")
    assert (new_invite.start, new_invite.end) == (start, end)

    edit(app, rid, attendees=["bob@example.com"])
    run_jobs(app, queues=("write", "default"))
    [*_, removed, update] = smtp_server.invitations(5)
    assert (removed.method, removed.uid, removed.recipients, removed.attendees) == (
        "CANCEL", new_invite.uid, ["carol@example.com"], ["carol@example.com"])
    assert (removed.organiser, removed.location) == (OTHER_ROOM, "Vega")
    assert (update.method, update.uid, sorted(update.recipients)) == (
        "REQUEST", new_invite.uid, ["alice@example.com", "bob@example.com"])
    assert update.sequence == removed.sequence > new_invite.sequence

    cancel(app, rid)
    run_jobs(app, queues=("write", "default"))
    [*_, last] = smtp_server.invitations(6)
    assert (last.method, last.uid, last.organiser, last.location) == ("CANCEL", new_invite.uid, OTHER_ROOM, "Vega")
    assert sorted(last.recipients) == ["alice@example.com", "bob@example.com"] and last.sequence > update.sequence
    run_jobs(app, queues=("write", "default"))
    assert len(smtp_server.messages) == 6  # nothing more: the old room's event was cancelled once


def test_a_booking_moved_then_deleted_in_google_mails_the_update_then_the_cancel(google, emulator, smtp_server):
    from jobs.sync import sync_room

    app, (room_id, _) = google
    start, end = slot()
    rid = book(app, room_id, start, end, attendees=["bob@example.com"])
    run_jobs(app, queues=("write", "default"))
    event_id = load(app, rid).google_event_id
    later = {"start": {"dateTime": (start + timedelta(hours=3)).isoformat()},
             "end": {"dateTime": (end + timedelta(hours=3)).isoformat()}}
    emulator.state.admin_patch_event(ROOM, event_id, later)
    with app.app_context():
        sync_room(room_id, full=True)
    run_jobs(app, queues=("write", "default"))
    emulator.state.admin_patch_event(ROOM, event_id, {"summary": "Renamed in Google"})
    with app.app_context():
        sync_room(room_id, full=True)
    run_jobs(app, queues=("write", "default"))
    emulator.state.admin_delete_event(ROOM, event_id)
    with app.app_context():
        sync_room(room_id, full=True)
    run_jobs(app, queues=("write", "default"))
    assert load(app, rid).status == ReservationStatus.CANCELLED
    [invite, update, cancel] = smtp_server.invitations(3)  # the new title alone sent nothing
    assert (update.method, update.uid, update.start) == ("REQUEST", invite.uid, start + timedelta(hours=3))
    assert (cancel.method, cancel.uid, cancel.start) == ("CANCEL", invite.uid, start + timedelta(hours=3))
    assert invite.sequence < update.sequence < cancel.sequence
    assert sorted(cancel.recipients) == ["alice@example.com", "bob@example.com"]


def test_a_booking_cancelled_before_its_invitation_went_out_gets_no_cancel(google, emulator, smtp_server):
    app, (room_id, _) = google
    rid = book(app, room_id, *slot(), attendees=["bob@example.com"])
    run_jobs(app, queues=("write",))  # Google holds it; its invitation waits in the mail queue
    assert len(live_events(emulator, ROOM)) == 1
    cancel(app, rid)
    run_jobs(app, queues=("write", "default"))
    assert live_events(emulator, ROOM) == []
    assert smtp_server.messages == []  # neither the REQUEST (cancelled meanwhile) nor a CANCEL of it


def test_a_booking_whose_write_failed_gets_no_mail_when_cancelled(google, emulator, smtp_server):
    app, (room_id, _) = google
    emulator.state.add_fault(403, times=1, method="POST", calendar=ROOM, reason="forbidden", message="No")
    rid = book(app, room_id, *slot(), attendees=["bob@example.com"])
    run_jobs(app, queues=("write", "default"))
    assert load(app, rid).status == ReservationStatus.FAILED
    cancel(app, rid)
    run_jobs(app, queues=("write", "default"))
    assert smtp_server.messages == []


def test_the_requeue_runs_on_the_schedule(app, monkeypatch):
    from jobs import schedule

    [periodic] = [p for p in schedule.PERIODIC if p.id == "requeue-stale-pending"]
    monkeypatch.setattr(schedule, "PERIODIC", [periodic])  # the other heartbeats are not this test's business
    with app.app_context():
        session = db.session()
        stale = make_reservation(session, make_room(session))
        session.commit()
        stale.updated_at = datetime.now(UTC) - timedelta(hours=1)  # its push was lost an hour ago
        session.commit()
    [job_id] = schedule.enqueue_due(app)
    assert job_id.startswith("periodic-requeue-stale-pending-")
    run_jobs(app, queues=("channels",))
    with app.app_context():
        assert [j.args for j in queue("write").jobs] == [(stale.id,)]


# --- people are told only when the time, the room or who is invited changes ----------------------


def test_a_new_title_or_description_sends_no_mail_a_new_time_does(google, emulator, smtp_server):
    app, (room_id, _) = google
    start, end = slot()
    rid = book(app, room_id, start, end, attendees=["bob@example.com", "carol@example.com"])
    run_jobs(app, queues=("write", "default"))
    smtp_server.wait_for(1)

    with app.app_context():
        booking.edit(db.session(), app.config["ROOMBRIDGE"], rid, actor_email="alice@example.com",
                     actor_is_admin=False, title="Planning (agenda inside)", description="1. budget\n2. hiring")
    run_jobs(app, queues=("write", "default"))
    [event] = live_events(emulator, ROOM)
    assert event["summary"] == "Planning (agenda inside)"  # Google has the new title ...
    assert load(app, rid).status == ReservationStatus.CONFIRMED
    assert len(smtp_server.messages) == 1  # ... and nobody was mailed (the jobs ran: SMTP hand-overs are done)

    with app.app_context():
        booking.edit(db.session(), app.config["ROOMBRIDGE"], rid, actor_email="alice@example.com",
                     actor_is_admin=False, start=start + timedelta(hours=1), end=end + timedelta(hours=1))
    run_jobs(app, queues=("write", "default"))
    [_, update] = smtp_server.invitations(2)
    assert sorted(update.recipients) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert str(update.event["SUMMARY"]) == "Planning (agenda inside)"
    assert load(app, rid).invitation_due is False


def test_delegated_mode_patches_a_new_title_without_sending_updates(delegated, emulator):
    app, room_id = delegated
    start, end = slot()
    rid = book(app, room_id, start, end, attendees=["bob@example.com"])
    run_jobs(app, queues=("write",))
    for changes in ({"title": "Renamed"}, {"start": start + timedelta(hours=1), "end": end + timedelta(hours=1)},
                    {"description": "Agenda"}, {"attendees": ["bob@example.com", "carol@example.com"]}):
        with app.app_context():
            booking.edit(db.session(), app.config["ROOMBRIDGE"], rid, actor_email="alice@example.com",
                         actor_is_admin=False, **changes)
        run_jobs(app, queues=("write",))
    patches = emulator.state.requests(calendar=ROOM, method="PATCH")
    assert [p["send_updates"] for p in patches] == ["none", "all", "none", "all"]


def test_a_title_from_google_with_a_line_break_still_makes_its_mail(google, emulator, smtp_server):
    app, (room_id, _) = google
    rid = book(app, room_id, *slot(), attendees=["bob@example.com"])
    with app.app_context():
        db.session().get(Reservation, rid).title = "Planning\r\nBcc: everyone@example.org"  # as a sync could store
        db.session().commit()
    run_jobs(app, queues=("write", "default"))
    [invite] = smtp_server.invitations(1)
    assert sorted(invite.recipients) == ["alice@example.com", "bob@example.com"]
    assert invite.message["Subject"].strip().startswith("Invitation: Planning Bcc: everyone@example.org @ ")
    assert invite.message["Bcc"] is None

"""A series booked here is ONE recurring event in Google (against the emulator, through the real client).

Its occurrences map to the event's instances; an occurrence's edit or cancel is an exception of its
instance; "this and following" ends the series and starts a new one; room-mode mails carry the RRULE
(whole series) or the RECURRENCE-ID (one occurrence), and parse with `icalendar`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from dateutil.rrule import rrulestr
from icalendar import Calendar, vRecur

from roombridge import booking, db, invitations
from roombridge.gcal import CalendarGateway, instance_id_for
from roombridge.models import Reservation, ReservationSeries, ReservationStatus, Room, SentInvitation
from roombridge.sync import sync_room_now
from tests.factories import make_reservation
from tests.jobs.test_reservations import (  # noqa: F401 (fixtures)
    OTHER_ROOM,
    ROOM,
    delegated,
    google,
    live_events,
    slot,
)
from tests.support import run_jobs

ALICE = "alice@example.com"
LONDON = ZoneInfo("Europe/London")


def calendar_of(message) -> Calendar:
    [part] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    return Calendar.from_ical(part.get_content())


def book_series(app, room_id, start, end, count=4, **fields):
    with app.app_context():
        result = booking.book(db.session(), app.config["ROOMBRIDGE"], booking.BookingRequest(
            room_id=room_id, organiser_email=ALICE, title="Weekly", start=start, end=end,
            attendees=["bob@example.com"], recurrence=booking.Recurrence("weekly", count=count), **fields))
        return [r.id for r in result.reservations]


def occurrences(app, series_id=None, ids=None) -> list[Reservation]:
    with app.app_context():
        query = sa.select(Reservation).order_by(Reservation.start_at)
        query = query.where(Reservation.series_id == series_id) if series_id else query.where(Reservation.id.in_(ids))
        return list(db.session().scalars(query))


def instances(app, event_id) -> list[dict]:
    with app.app_context():
        service = CalendarGateway.for_app(kind="sync").service
        return service.events().instances(calendarId=ROOM, eventId=event_id, showDeleted=True).execute()["items"]


def written_series(app, emulator, room_id, count):
    """A weekly series booked and written to Google: its reservation ids, its start, and its event."""
    start, end = slot(days=3)
    ids = book_series(app, room_id, start, end, count=count)
    run_jobs(app, queues=("write", "default"))
    [event] = live_events(emulator, ROOM)
    return ids, start, event


def edit_as_alice(app, reservation_id, **changes):
    with app.app_context():
        booking.edit(db.session(), app.config["ROOMBRIDGE"], reservation_id, actor_email=ALICE, actor_is_admin=False,
                     **changes)
    run_jobs(app, queues=("write", "default"))


def cancel_as_alice(app, reservation_id, scope="this"):
    with app.app_context():
        booking.cancel(db.session(), app.config["ROOMBRIDGE"], reservation_id, actor_email=ALICE,
                       actor_is_admin=False, scope=scope)
    run_jobs(app, queues=("write", "default"))


def inserts(emulator):
    return [r for r in emulator.state.requests(calendar=ROOM, method="POST") if "/instances" not in r.get("path", "")]


def sync(app, room_id):
    with app.app_context():
        session = db.session()
        return sync_room_now(session, CalendarGateway.for_app(kind="sync"), session.get(Room, room_id),
                             app.config["ROOMBRIDGE"], full=True)


def test_a_series_is_one_recurring_event_with_exdates_and_one_invitation(google, emulator, smtp_server):  # noqa: F811
    app, (room_id, _) = google
    start, end = slot(days=3)
    with app.app_context():
        session = db.session()
        make_reservation(session, session.get(Room, room_id), start=start + timedelta(weeks=1),
                         status=ReservationStatus.CONFIRMED, title="In the way")
        session.commit()
    ids = book_series(app, room_id, start, end, skip_conflicts=True)
    assert len(ids) == 3
    run_jobs(app, queues=("write", "default"))
    # Three occurrences, one Calendar call: the insert of the recurring event (the others only record).
    assert [r["method"] for r in emulator.state.requests(calendar=ROOM)] == ["POST"]

    [event] = live_events(emulator, ROOM)
    rule = f"FREQ=WEEKLY;BYDAY={['MO', 'TU', 'WE', 'TH', 'FR', 'SA', 'SU'][start.weekday()]};COUNT=4"
    assert event["recurrence"][0] == "RRULE:" + rule
    skipped = start + timedelta(weeks=1)  # London wall time, as Google writes it
    assert event["recurrence"][1:] == [f"EXDATE;TZID=Europe/London:{skipped:%Y%m%dT%H%M%S}"]
    assert len(inserts(emulator)) == 1  # one event, not one per occurrence
    found = occurrences(app, ids=ids)
    assert [r.status for r in found] == [ReservationStatus.CONFIRMED] * 3
    listed = [i["id"] for i in instances(app, event["id"]) if i.get("status") != "cancelled"]
    assert [r.google_event_id for r in found] == listed == [
        instance_id_for(event["id"], start + timedelta(weeks=w)) for w in (0, 2, 3)]
    assert {r.google_recurring_event_id for r in found} == {event["id"]}

    [(rcpts, message)] = smtp_server.wait_for(1)
    assert sorted(rcpts) == [ALICE, "bob@example.com"]
    invite = calendar_of(message)
    [vevent] = invite.walk("VEVENT")
    assert (str(invite["METHOD"]), str(vevent["UID"])) == ("REQUEST", f"{event['id']}@google.com")
    assert vevent["RRULE"] == vRecur.from_ical(rule)
    assert vevent.decoded("DTSTART") == start.astimezone(UTC)
    assert [d.dt for d in vevent["EXDATE"].dts] == [(start + timedelta(weeks=1)).astimezone(UTC)]
    assert "RECURRENCE-ID" not in vevent and int(vevent["SEQUENCE"]) == 0  # the first mail of its UID

    # The room's sync sees the instances as ours: nothing imported, nothing changed.
    report = sync(app, room_id)
    assert report.changes == 0
    with app.app_context():
        assert db.session().scalar(sa.select(sa.func.count()).select_from(Reservation)) == 4


def test_an_occurrence_edit_is_an_instance_exception_and_its_cancel_a_cancelled_instance(
        google, emulator, smtp_server):  # noqa: F811
    app, (room_id, _) = google
    ids, _, event = written_series(app, emulator, room_id, 3)
    [(_, invitation)] = smtp_server.wait_for(1)
    [series_vevent] = calendar_of(invitation).walk("VEVENT")
    second = occurrences(app, ids=ids)[1]
    edit_as_alice(app, second.id, start=second.start_at + timedelta(hours=2), end=second.end_at + timedelta(hours=2),
                  title="Moved once")
    assert len(inserts(emulator)) == 1  # still one event: the edit is an exception of its instance
    listed = {i["id"]: i for i in instances(app, event["id"])}
    moved = listed[second.google_event_id]
    assert moved["recurringEventId"] == event["id"] and moved["summary"] == "Moved once"
    assert datetime.fromisoformat(moved["start"]["dateTime"]) == second.start_at + timedelta(hours=2)
    assert datetime.fromisoformat(moved["originalStartTime"]["dateTime"]) == second.start_at
    [*_, (_, update)] = smtp_server.wait_for(2)
    [vevent] = calendar_of(update).walk("VEVENT")
    assert str(vevent["UID"]) == f"{event['id']}@google.com"
    assert vevent.decoded("RECURRENCE-ID") == second.start_at.astimezone(UTC)
    assert vevent.decoded("DTSTART") == (second.start_at + timedelta(hours=2)).astimezone(UTC)
    assert int(vevent["SEQUENCE"]) > int(series_vevent["SEQUENCE"])  # supersedes the series' own
    assert "RRULE" not in vevent

    third = occurrences(app, ids=ids)[2]
    cancel_as_alice(app, third.id)
    listed = {i["id"]: i for i in instances(app, event["id"])}
    assert listed.get(third.google_event_id, {"status": "cancelled"})["status"] == "cancelled"
    assert [e["id"] for e in live_events(emulator, ROOM) if e.get("recurrence")] == [event["id"]]
    assert not emulator.state.requests(calendar=ROOM, method="DELETE") or all(
        "_" in r.get("path", "_") for r in emulator.state.requests(calendar=ROOM, method="DELETE"))
    [*_, (_, cancel)] = smtp_server.wait_for(3)
    cancelled = calendar_of(cancel)
    [vevent] = cancelled.walk("VEVENT")
    assert str(cancelled["METHOD"]) == "CANCEL"
    assert vevent.decoded("RECURRENCE-ID") == third.start_at.astimezone(UTC)

    # The sync leaves our series alone: the exception and the cancelled instance are echoes.
    sync(app, room_id)
    found = occurrences(app, ids=ids)
    assert [r.status for r in found] == [ReservationStatus.CONFIRMED, ReservationStatus.CONFIRMED,
                                         ReservationStatus.CANCELLED]
    assert found[1].title == "Moved once"
    with app.app_context():
        assert db.session().get(ReservationSeries, found[0].series_id).title == "Weekly"


def test_this_and_following_ends_the_series_and_starts_a_new_recurring_event(google, emulator, smtp_server):  # noqa: F811
    app, (room_id, _) = google
    ids, _, first_event = written_series(app, emulator, room_id, 4)
    third = occurrences(app, ids=ids)[2]
    edit_as_alice(app, third.id, start=third.start_at + timedelta(hours=1), end=third.end_at + timedelta(hours=1),
                  title="Later", scope="following")

    events = {e["id"]: e for e in live_events(emulator, ROOM) if e.get("recurrence")}
    assert len(events) == 2 and len(inserts(emulator)) == 2
    old = events[first_event["id"]]
    assert old["recurrence"][0].endswith(f"UNTIL={third.start_at - timedelta(seconds=1):%Y%m%dT%H%M%SZ}")
    [new_id] = set(events) - {first_event["id"]}
    assert "COUNT" not in events[new_id]["recurrence"][0]
    found = occurrences(app, ids=ids)
    assert [r.title for r in found] == ["Weekly", "Weekly", "Later", "Later"]
    assert [r.start_at for r in found[2:]] == [third.start_at + timedelta(hours=1),
                                               third.start_at + timedelta(weeks=1, hours=1)]
    assert [r.google_recurring_event_id for r in found] == [first_event["id"]] * 2 + [new_id] * 2
    assert [r.status for r in found] == [ReservationStatus.CONFIRMED] * 4
    assert {i["id"] for i in instances(app, new_id)} == {r.google_event_id for r in found[2:]}
    assert {i["id"] for i in instances(app, first_event["id"]) if i.get("status") != "cancelled"} == {
        r.google_event_id for r in found[:2]}
    assert found[2].series_id != found[0].series_id
    sync(app, room_id)
    assert [r.status for r in occurrences(app, ids=ids)] == [ReservationStatus.CONFIRMED] * 4


def test_all_occurrences_edit_patches_the_event_and_all_cancel_deletes_it(google, emulator, smtp_server):  # noqa: F811
    app, (room_id, _) = google
    ids, start, event = written_series(app, emulator, room_id, 3)
    smtp_server.wait_for(1)
    second = occurrences(app, ids=ids)[1]
    edit_as_alice(app, second.id, title="Renamed", start=second.start_at + timedelta(minutes=30),
                  end=second.end_at + timedelta(minutes=30), attendees=["carol@example.com"], scope="all")
    # One CANCEL of the whole series to Bob (dropped), one updated REQUEST of it to the rest.
    mails = smtp_server.wait_for(3)[1:]
    by_method = {str(calendar_of(m)["METHOD"]): (sorted(r), calendar_of(m).walk("VEVENT")[0]) for r, m in mails}
    assert by_method["CANCEL"][0] == ["bob@example.com"]
    assert by_method["REQUEST"][0] == [ALICE, "carol@example.com"]
    assert {str(v["UID"]) for _, v in by_method.values()} == {f"{event['id']}@google.com"}
    assert "RRULE" in by_method["REQUEST"][1] and "RECURRENCE-ID" not in by_method["REQUEST"][1]
    [patched] = live_events(emulator, ROOM)
    assert patched["id"] == event["id"] and patched["summary"] == "Renamed"
    assert datetime.fromisoformat(patched["start"]["dateTime"]) == start + timedelta(minutes=30)
    found = occurrences(app, ids=ids)
    assert [r.start_at for r in found] == [start + timedelta(weeks=w, minutes=30) for w in range(3)]
    listed = [i["id"] for i in instances(app, event["id"]) if i.get("status") != "cancelled"]
    assert [r.google_event_id for r in found] == listed
    assert not emulator.state.requests(calendar=ROOM, method="PATCH") or all(
        event["id"] + "_" not in r.get("path", "") for r in emulator.state.requests(calendar=ROOM, method="PATCH"))
    sync(app, room_id)
    assert [r.status for r in occurrences(app, ids=ids)] == [ReservationStatus.CONFIRMED] * 3

    with app.app_context():
        booking.cancel(db.session(), app.config["ROOMBRIDGE"], found[0].id, actor_email=ALICE, actor_is_admin=False,
                       scope="all")
    run_jobs(app, queues=("write", "default"))
    assert live_events(emulator, ROOM) == []
    assert [r.status for r in occurrences(app, ids=ids)] == [ReservationStatus.CANCELLED] * 3
    assert all(r.google_calendar_id is None for r in occurrences(app, ids=ids))


def test_delegated_mode_lets_google_invite_to_the_series_and_its_exceptions(delegated, emulator):  # noqa: F811
    from roombridge.queue import queue

    app, room_id = delegated
    ids, _, event = written_series(app, emulator, room_id, 3)
    assert {a["email"] for a in event["attendees"]} == {ALICE, "bob@example.com"}
    [insert] = emulator.state.requests(calendar=ROOM, method="POST")
    assert insert["send_updates"] == "all"
    second = occurrences(app, ids=ids)[1]
    edit_as_alice(app, second.id, start=second.start_at + timedelta(hours=1), end=second.end_at + timedelta(hours=1))
    [patch] = emulator.state.requests(calendar=ROOM, method="PATCH")
    assert patch["send_updates"] == "all"
    with app.app_context():
        assert queue("default").count == 0  # Google invites; we send no mail


def test_a_monthly_series_on_the_second_tuesday_is_expanded_as_google_does(google, emulator):  # noqa: F811
    app, (room_id, _) = google
    start, end = slot(days=3)
    duration = end - start
    day = start.date().replace(day=1)
    while True:  # the next 2nd Tuesday at least three days ahead
        second_tuesday = day + timedelta(days=(1 - day.weekday()) % 7 + 7)
        if second_tuesday >= start.date():
            break
        day = (day + timedelta(days=32)).replace(day=1)
    start = start.replace(year=second_tuesday.year, month=second_tuesday.month, day=second_tuesday.day)
    with app.app_context():
        result = booking.book(db.session(), app.config["ROOMBRIDGE"], booking.BookingRequest(
            room_id=room_id, organiser_email=ALICE, title="Monthly", start=start, end=start + duration,
            recurrence=booking.Recurrence("monthly", monthly="weekday", count=3)))
        ids = [r.id for r in result.reservations]
    run_jobs(app, queues=("write",))
    [event] = live_events(emulator, ROOM)
    assert event["recurrence"] == ["RRULE:FREQ=MONTHLY;BYDAY=2TU;COUNT=3"]
    found = occurrences(app, ids=ids)
    assert all(r.start_at.astimezone(start.tzinfo).weekday() == 1 and 8 <= r.start_at.astimezone(start.tzinfo).day
               <= 14 for r in found)
    assert [r.google_event_id for r in found] == [i["id"] for i in instances(app, event["id"])]


def test_one_occurrence_moved_to_another_room_becomes_an_event_of_its_own_there(google, emulator, smtp_server):  # noqa: F811
    app, (room_id, other_room_id) = google
    ids, _, event = written_series(app, emulator, room_id, 3)
    smtp_server.wait_for(1)
    second = occurrences(app, ids=ids)[1]
    edit_as_alice(app, second.id, room_id=other_room_id)

    [moved] = live_events(emulator, OTHER_ROOM)
    assert "recurrence" not in moved and "recurringEventId" not in moved
    listed = {i["id"]: i for i in instances(app, event["id"])}
    assert listed.get(second.google_event_id, {"status": "cancelled"})["status"] == "cancelled"
    assert [e["id"] for e in live_events(emulator, ROOM) if e.get("recurrence")] == [event["id"]]
    assert occurrences(app, ids=[second.id])[0].google_event_id == moved["id"]
    [*_, (_, cancel), (_, request)] = smtp_server.wait_for(3)
    [cancelled] = calendar_of(cancel).walk("VEVENT")
    assert (str(cancelled["UID"]), cancelled.decoded("RECURRENCE-ID")) == (
        f"{event['id']}@google.com", second.start_at.astimezone(UTC))
    [invited] = calendar_of(request).walk("VEVENT")
    assert str(invited["UID"]) == f"{moved['id']}@google.com" and "RECURRENCE-ID" not in invited
    assert str(invited["ORGANIZER"]) == f"mailto:{OTHER_ROOM}"


def test_an_instance_of_our_series_moved_or_deleted_in_google_is_applied_to_that_occurrence(
        google, emulator, smtp_server):  # noqa: F811
    app, (room_id, _) = google
    ids, _, event = written_series(app, emulator, room_id, 3)
    smtp_server.wait_for(1)
    first, second, _third = occurrences(app, ids=ids)
    later = second.start_at + timedelta(hours=3)
    emulator.state.admin_patch_event(ROOM, second.google_event_id, {
        "start": later.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (later + (second.end_at - second.start_at)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    emulator.state.admin_delete_event(ROOM, first.google_event_id)
    sync(app, room_id)
    run_jobs(app, queues=("default",))

    found = occurrences(app, ids=ids)
    assert [r.status for r in found] == [ReservationStatus.CANCELLED, ReservationStatus.CONFIRMED,
                                         ReservationStatus.CONFIRMED]
    assert found[1].start_at == later and found[1].occurrence_start_at == second.start_at
    with app.app_context():  # nothing imported: both are ours
        assert db.session().scalar(sa.select(sa.func.count()).select_from(Reservation)) == 3
    notices = [calendar_of(message).walk("VEVENT")[0] for _, message in smtp_server.wait_for(3)[1:]]
    assert sorted(v.decoded("RECURRENCE-ID") for v in notices) == [first.start_at.astimezone(UTC),
                                                                     second.start_at.astimezone(UTC)]
    assert {str(v["UID"]) for v in notices} == {f"{event['id']}@google.com"}


def sent_records(app) -> dict[tuple[str, str], tuple[str, int, str | None]]:
    with app.app_context():
        return {(r.uid, r.recurrence_id): (r.method, r.sequence, r.rrule)
                for r in db.session().scalars(sa.select(SentInvitation))}


def test_series_mails_are_what_people_were_sent_made_current(google, emulator, smtp_server):  # noqa: F811
    """The series and each occurrence are kept per UID and RECURRENCE-ID (sent_invitations): a new title
    sends nothing, a mail job run again sends nothing twice, an occurrence's update supersedes the
    series' and an occurrence changed back to the series' values is told so."""
    app, (room_id, _) = google
    ids, _, event = written_series(app, emulator, room_id, 3)
    uid = f"{event['id']}@google.com"
    assert sent_records(app) == {(uid, ""): ("REQUEST", 0, event["recurrence"][0])}
    first, second, _third = occurrences(app, ids=ids)

    edit_as_alice(app, second.id, title="Renamed", scope="all")
    edit_as_alice(app, first.id, title="Only this one")
    assert [e["summary"] for e in live_events(emulator, ROOM) if e.get("recurrence")] == ["Renamed"]
    assert len(smtp_server.messages) == 1  # titles alone: no update, for the series or an occurrence
    for reservation_id in ids:  # every occurrence's mail job again: nothing new to send
        with app.app_context():
            assert invitations.mail_invitations(db.session(), app.config["ROOMBRIDGE"], reservation_id) == (
                "nothing to send")

    later = second.start_at + timedelta(hours=1)
    edit_as_alice(app, second.id, start=later, end=later + (second.end_at - second.start_at))
    rid = second.start_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    assert sent_records(app)[(uid, rid)] == ("REQUEST", 1, None)
    edit_as_alice(app, second.id, start=second.start_at, end=second.end_at)  # back where the rule has it
    [*_, back] = smtp_server.invitations(3)
    assert (back.method, back.uid, back.start, back.sequence) == ("REQUEST", uid, second.start_at, 2)
    assert back.event.decoded("RECURRENCE-ID") == second.start_at.astimezone(UTC)
    assert len(smtp_server.messages) == 3


def test_all_occurrences_moved_to_another_room_cancel_the_old_series_and_invite_to_the_new(
        google, emulator, smtp_server):  # noqa: F811
    app, (room_id, other_room_id) = google
    ids, _, event = written_series(app, emulator, room_id, 3)
    smtp_server.wait_for(1)
    third = occurrences(app, ids=ids)[2]
    cancel_as_alice(app, third.id)
    edit_as_alice(app, ids[1], room_id=other_room_id, scope="all")
    [moved] = [e for e in live_events(emulator, OTHER_ROOM) if e.get("recurrence")]
    assert [e for e in live_events(emulator, ROOM) if e.get("recurrence")] == []
    assert moved["recurrence"][0] == event["recurrence"][0]
    [_, gone, cancel, request] = smtp_server.invitations(4)
    assert (gone.method, gone.uid, gone.event.decoded("RECURRENCE-ID")) == (
        "CANCEL", f"{event['id']}@google.com", third.start_at.astimezone(UTC))
    assert (cancel.method, cancel.uid, cancel.organiser) == ("CANCEL", f"{event['id']}@google.com", ROOM)
    assert "RRULE" in cancel.event and "RECURRENCE-ID" not in cancel.event
    assert (request.method, request.uid, request.organiser) == ("REQUEST", f"{moved['id']}@google.com", OTHER_ROOM)
    assert sorted(request.recipients) == [ALICE, "bob@example.com"] and "RRULE" in request.event
    # The new event leaves out the occurrence cancelled alone, as Google's does: no CANCEL of it needed.
    assert exdates_of(request.event) == [third.start_at.astimezone(UTC)]
    assert moved["recurrence"][1:] == [f"EXDATE;TZID=Europe/London:{third.start_at.astimezone(LONDON):%Y%m%dT%H%M%S}"]
    run_jobs(app, queues=("write", "default"))
    assert len(smtp_server.messages) == 4  # the occurrences' own jobs find nothing more to send


def exdates_of(vevent) -> list[datetime]:
    """Every EXDATE of a VEVENT (one property or several), in UTC."""
    found = vevent.get("EXDATE")
    found = [] if found is None else found if isinstance(found, list) else [found]
    return sorted(moment.dt.astimezone(UTC) for prop in found for moment in prop.dts)


def shown(invitation) -> list[datetime]:
    """The starts a calendar shows for a series' REQUEST: its rule in the room's wall time, less its EXDATEs."""
    rule = rrulestr(invitation.event["RRULE"].to_ical().decode(), dtstart=invitation.start.astimezone(LONDON))
    return [moment for moment in rule if moment.astimezone(UTC) not in exdates_of(invitation.event)]


def instance_starts(app, event_id) -> list[datetime]:
    """The starts of a recurring Google event's instances that stand, soonest first."""
    return sorted(datetime.fromisoformat(i["start"]["dateTime"]) for i in instances(app, event_id)
                  if i.get("status") != "cancelled")


def test_a_series_update_lists_the_occurrences_left_out_as_google_does(google, emulator, smtp_server):  # noqa: F811
    """An occurrence cancelled alone, or moved alone to another room, gets its RECURRENCE-ID CANCEL; the
    next REQUEST of the whole series lists both as EXDATEs, the same set as Google's event
    (`ReservationSeries.left_out`), and no CANCEL of them goes again."""
    app, (room_id, other_room_id) = google
    ids, start, event = written_series(app, emulator, room_id, 4)
    smtp_server.wait_for(1)
    _, second, third, _ = occurrences(app, ids=ids)
    cancel_as_alice(app, third.id)
    [_, cancel] = smtp_server.invitations(2)
    assert (cancel.method, cancel.event.decoded("RECURRENCE-ID")) == ("CANCEL", third.start_at.astimezone(UTC))
    assert "RRULE" not in cancel.event
    edit_as_alice(app, second.id, room_id=other_room_id)
    moved_alone = {m.method: m for m in smtp_server.invitations(4)[2:]}
    assert moved_alone["CANCEL"].event.decoded("RECURRENCE-ID") == second.start_at.astimezone(UTC)
    assert moved_alone["REQUEST"].organiser == OTHER_ROOM and moved_alone["REQUEST"].uid != cancel.uid

    later = timedelta(minutes=30)
    edit_as_alice(app, ids[0], start=start + later, end=start + later + (third.end_at - third.start_at), scope="all")
    updates = smtp_server.invitations(6)[4:]
    [request] = [m for m in updates if m.uid == f"{event['id']}@google.com"]
    assert request.method == "REQUEST" and "RRULE" in request.event and "RECURRENCE-ID" not in request.event
    left_out = [second.start_at + later, third.start_at + later]
    assert exdates_of(request.event) == left_out
    [patched] = [e for e in live_events(emulator, ROOM) if e.get("recurrence")]
    assert patched["recurrence"][1:] == [f"EXDATE;TZID=Europe/London:{moment.astimezone(LONDON):%Y%m%dT%H%M%S}"
                                         for moment in left_out]
    # A calendar that reads the update shows two occurrences, as Google lists two instances.
    assert len(shown(request)) == 2 and shown(request) == instance_starts(app, event["id"])
    # The occurrence in the other room is an event of its own there; its people get its own update.
    [own] = [m for m in updates if m is not request]
    assert (own.method, own.uid, own.start) == ("REQUEST", moved_alone["REQUEST"].uid, second.start_at + later)
    run_jobs(app, queues=("write", "default"))
    assert len(smtp_server.messages) == 6  # nothing more: no CANCEL of what the update already leaves out


def test_this_and_following_mails_end_the_old_series_and_invite_to_the_new(google, emulator, smtp_server):  # noqa: F811
    """Room mode: the old series gets an update whose RRULE ends with UNTIL before the split, the new one a
    REQUEST under its own UID; each lists the occurrences cancelled alone on its side as EXDATEs, and
    shows what Google lists."""
    app, (room_id, _) = google
    ids, _, first_event = written_series(app, emulator, room_id, 5)
    found = occurrences(app, ids=ids)
    cancel_as_alice(app, found[1].id)  # before the split: stays with the old series
    cancel_as_alice(app, found[3].id)  # after it: goes with the new one
    assert [m.method for m in smtp_server.invitations(3)] == ["REQUEST", "CANCEL", "CANCEL"]
    third = found[2]
    edit_as_alice(app, third.id, start=third.start_at + timedelta(hours=1), end=third.end_at + timedelta(hours=1),
                  title="Later", scope="following")

    [new_event] = [e for e in live_events(emulator, ROOM) if e.get("recurrence") and e["id"] != first_event["id"]]
    first, *_, old, new = smtp_server.invitations(5)
    assert (old.method, old.uid, old.start) == ("REQUEST", first.uid, first.start)
    assert old.sequence > first.sequence and "RECURRENCE-ID" not in old.event
    assert old.event["RRULE"]["UNTIL"] == [third.start_at - timedelta(seconds=1)]
    assert "COUNT" not in old.event["RRULE"]
    assert exdates_of(old.event) == [found[1].start_at]
    assert shown(old) == instance_starts(app, first_event["id"]) == [found[0].start_at]

    assert (new.method, new.uid, new.sequence) == ("REQUEST", f"{new_event['id']}@google.com", 0)
    assert (new.start, new.event["SUMMARY"]) == (third.start_at + timedelta(hours=1), "Later")
    assert sorted(new.recipients) == [ALICE, "bob@example.com"] and "RECURRENCE-ID" not in new.event
    assert exdates_of(new.event) == [found[3].start_at + timedelta(hours=1)]
    assert shown(new) == instance_starts(app, new_event["id"]) == [
        third.start_at + timedelta(hours=1), found[4].start_at + timedelta(hours=1)]

    run_jobs(app, queues=("write", "default"))
    for reservation_id in ids:  # every occurrence's mail job again: nothing new to send
        with app.app_context():
            assert invitations.mail_invitations(db.session(), app.config["ROOMBRIDGE"], reservation_id) == (
                "nothing to send")
    assert len(smtp_server.messages) == 5

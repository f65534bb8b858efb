"""iMIP invitations: the iCalendar object, the e-mail around it, SMTP delivery, and what people are sent when.

The mails go to a real local SMTP server; `smtp_server.invitations()` reads each as a strict
client would (tests/support.py: `read_mail`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from icalendar import Calendar

from roombridge import db, invitations
from roombridge.models import Reservation, ReservationStatus, SentInvitation
from tests.factories import make_reservation, make_room
from tests.support import free_port

ORION = "room-orion@resource.calendar.google.com"
VEGA = "room-vega@resource.calendar.google.com"
SENDER = "rooms@example.com"


@pytest.fixture
def mail_app(make_app, smtp_server):
    return make_app(SMTP_URL=smtp_server.url, MAIL_FROM=f"Roombridge <{SENDER}>")


@pytest.fixture
def session(mail_app):
    with mail_app.app_context():
        yield db.session()


@pytest.fixture
def rooms(session):
    made = (make_room(session, calendar_id=ORION, name="Orion", time_zone="Europe/Paris"),
            make_room(session, calendar_id=VEGA, name="Vega", time_zone="Europe/Paris"))
    session.commit()
    return made


@pytest.fixture
def reservation(session, rooms):
    """A booking Google holds (confirmed, its event on Orion's calendar) that nobody was mailed yet."""
    made = make_reservation(session, rooms[0], datetime(2030, 7, 1, 8, 0, tzinfo=UTC), title="Retro",
                            description="Bring ideas", attendees=["bob@example.com", "carol@example.com"],
                            google_event_id="abc123def", google_calendar_id=ORION,
                            status=ReservationStatus.CONFIRMED)
    session.commit()
    return made


def parse(invitation) -> Calendar:
    return Calendar.from_ical(invitation.ics)


def mail(session, mail_app, reservation_id) -> str:
    return invitations.mail_invitations(session, mail_app.config["ROOMBRIDGE"], reservation_id)


def change(session, reservation: Reservation, **fields) -> None:
    """An edit as the Google write leaves it: stored, and Google holds it (confirmed)."""
    for name, value in fields.items():
        setattr(reservation, name, value)
    reservation.status = fields.get("status", ReservationStatus.CONFIRMED)
    session.commit()


# --- the iCalendar object and the mail -----------------------------------------------------------


def test_request_has_the_google_uid_the_room_as_organiser_sent_by_the_sender_and_every_attendee(reservation):
    invitation = invitations.build_invitation(reservation, "REQUEST", sent_by=SENDER)
    calendar = parse(invitation)
    assert calendar["METHOD"] == "REQUEST"
    [event] = calendar.walk("VEVENT")
    assert str(event["UID"]) == "abc123def@google.com" == invitation.uid
    assert str(event["ORGANIZER"]) == f"mailto:{ORION}"
    assert event["ORGANIZER"].params["CN"] == "Orion"
    assert event["ORGANIZER"].params["SENT-BY"] == f"mailto:{SENDER}"
    assert [str(a) for a in event["ATTENDEE"]] == [
        "mailto:alice@example.com", "mailto:bob@example.com", "mailto:carol@example.com"]
    # In the room's zone, with its VTIMEZONE: Paris is UTC+2 in July.
    assert event["DTSTART"].params["TZID"] == "Europe/Paris"
    assert [str(tz["TZID"]) for tz in calendar.walk("VTIMEZONE")] == ["Europe/Paris"]
    assert event.decoded("DTSTART") == datetime(2030, 7, 1, 8, 0, tzinfo=UTC)
    assert event.decoded("DTEND") == datetime(2030, 7, 1, 9, 0, tzinfo=UTC)
    assert (str(event["SUMMARY"]), str(event["STATUS"]), str(event["LOCATION"])) == ("Retro", "CONFIRMED", "Orion")
    assert invitation.recipients == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert "10:00" in invitation.text


def test_no_uid_before_google_has_the_event(session, reservation):
    reservation.google_event_id = None
    with pytest.raises(ValueError):
        invitations.build_invitation(reservation, "REQUEST")
    with pytest.raises(ValueError):
        invitations.build_invitation(reservation, "PUBLISH", event_id="x")


def test_the_mail_is_text_plus_calendar_from_the_room_and_arrives_over_smtp(reservation, smtp_server):
    invitation = invitations.build_invitation(reservation, "REQUEST", sent_by=SENDER)
    message = invitations.to_email(invitation, f"Roombridge <{SENDER}>")
    assert invitations.send(message, smtp_server.url) is True
    [received] = smtp_server.invitations(1)
    assert sorted(received.recipients) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert received.message.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part for part in received.message.iter_parts()}
    assert set(parts) == {"text/plain", "text/calendar"}
    assert received.method == parts["text/calendar"].get_param("method") == "REQUEST"
    assert received.message["Subject"].startswith("Invitation: Retro")
    # From: the room's name at the sending address, which the ORGANIZER names as SENT-BY.
    assert received.message["From"].addresses[0].display_name == "Orion"
    assert received.message["From"].addresses[0].addr_spec == SENDER


def test_non_ascii_titles_and_names_go_over_the_wire_in_seven_bits(session, reservation, smtp_server):
    reservation.title = "Rétro d'équipe – 会议"
    reservation.description = "Café et croissants ☕"
    reservation.room.name = "Salle Hélène"
    session.commit()
    invitation = invitations.build_invitation(reservation, "REQUEST", sent_by=SENDER)
    assert invitations.send(invitations.to_email(invitation, SENDER), smtp_server.url)
    [received] = smtp_server.invitations(1)
    [raw] = smtp_server.raw
    assert max(raw) < 0x80 and "BODY=8BITMIME" not in smtp_server.options[0]  # encoded, not 8-bit
    assert str(received.event["SUMMARY"]) == "Rétro d'équipe – 会议"
    assert received.location == "Salle Hélène"
    assert received.event["ORGANIZER"].params["CN"] == "Salle Hélène"
    assert received.message["Subject"].startswith("Invitation: Rétro d'équipe – 会议 @ ")
    assert received.message["From"].addresses[0].display_name == "Salle Hélène"
    assert "Café et croissants ☕" in received.message.get_body(("plain",)).get_content()


def test_a_series_carries_its_rule_and_exdates_and_an_occurrence_its_recurrence_id_in_the_rooms_zone(smtp_server):
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    first = datetime(2030, 3, 18, 10, 0, tzinfo=paris)  # weekly across the change to summer time
    series = invitations.Meeting(
        uid="series1@google.com", organiser=ORION, organiser_name="Orion", location="Orion", summary="Weekly",
        start_at=first, end_at=first + timedelta(hours=1), time_zone="Europe/Paris", booker="alice@example.com",
        attendees=("alice@example.com", "bob@example.com"), rrule="RRULE:FREQ=WEEKLY;COUNT=4",
        exdates=(first + timedelta(weeks=1),))
    moved = datetime(2030, 4, 1, 14, 0, tzinfo=paris)
    occurrence = replace(series, rrule=None, exdates=(), start_at=moved, end_at=moved + timedelta(hours=1),
                         recurrence_id=first + timedelta(weeks=2))
    assert occurrence.key == ("series1@google.com", "20300401T080000Z") and series.key == ("series1@google.com", "")
    for meeting in (series, occurrence):
        invitation = invitations.compose(meeting, "REQUEST", 1, recipients=meeting.attendees, sent_by=SENDER)
        invitations.send(invitations.to_email(invitation, SENDER), smtp_server.url)
    [whole, one] = smtp_server.invitations(2)
    assert whole.event["RRULE"].to_ical() == b"FREQ=WEEKLY;COUNT=4"
    assert whole.event["DTSTART"].params["TZID"] == "Europe/Paris"  # the rule repeats 10:00 Paris time
    [exdate] = whole.event["EXDATE"].dts
    assert exdate.dt == first + timedelta(weeks=1) and exdate.dt.tzinfo.key == "Europe/Paris"
    assert one.event.decoded("RECURRENCE-ID") == first + timedelta(weeks=2)
    assert one.event["RECURRENCE-ID"].params["TZID"] == "Europe/Paris"
    assert (one.uid, one.start) == (whole.uid, moved)
    assert series.changed_for_people(replace(series, rrule="RRULE:FREQ=WEEKLY;COUNT=5"))
    assert not series.changed_for_people(replace(series, summary="Weekly sync", attendees=series.attendees[::-1]))


def test_without_smtp_url_mail_is_skipped_and_a_dead_server_raises_for_retry(reservation):
    message = invitations.to_email(invitations.build_invitation(reservation, "REQUEST"), SENDER)
    assert invitations.send(message, "") is False
    port = free_port()  # nothing listens there
    with pytest.raises(OSError):
        invitations.send(message, f"smtp://127.0.0.1:{port}", timeout=2)


# --- what people are sent, given what they were sent ----------------------------------------------


def test_a_booking_is_invited_once_and_a_new_title_alone_sends_nothing(session, mail_app, reservation, smtp_server):
    assert mail(session, mail_app, reservation.id) == "REQUEST 0 to 3"
    assert mail(session, mail_app, reservation.id) == "nothing to send"  # people hold it as it is
    change(session, reservation, title="Retro (agenda inside)", description="1. what went well")
    assert mail(session, mail_app, reservation.id) == "nothing to send"
    [request] = smtp_server.invitations(1)
    assert (request.method, request.sequence) == ("REQUEST", 0)

    change(session, reservation, start_at=reservation.start_at + timedelta(hours=1),
           end_at=reservation.end_at + timedelta(hours=1))
    assert mail(session, mail_app, reservation.id) == "REQUEST 1 to 3"
    [_, update] = smtp_server.invitations(2)
    assert (update.uid, update.sequence) == (request.uid, 1)
    assert str(update.event["SUMMARY"]) == "Retro (agenda inside)"  # the new title rides along
    assert update.message["Subject"].startswith("Updated invitation: ")


def test_a_removed_attendee_gets_a_cancel_that_lists_them_the_others_the_update(
        session, mail_app, reservation, smtp_server):
    mail(session, mail_app, reservation.id)
    change(session, reservation, attendees=["bob@example.com"])
    assert mail(session, mail_app, reservation.id) == "CANCEL 1 to 1, REQUEST 1 to 2"
    [request, cancel, update] = smtp_server.invitations(3)
    assert (cancel.method, cancel.uid, cancel.sequence) == ("CANCEL", request.uid, 1)
    assert cancel.recipients == cancel.attendees == ["carol@example.com"]
    assert cancel.message["Subject"].startswith("Removed: Retro")
    assert (update.method, update.sequence) == ("REQUEST", 1)
    assert sorted(update.recipients) == update.attendees == ["alice@example.com", "bob@example.com"]


def test_a_move_cancels_the_old_event_as_people_hold_it(session, mail_app, rooms, reservation, smtp_server):
    mail(session, mail_app, reservation.id)
    change(session, reservation, start_at=reservation.start_at + timedelta(hours=1),
           end_at=reservation.end_at + timedelta(hours=1))
    mail(session, mail_app, reservation.id)  # they hold SEQUENCE 1 of the Orion event now
    # Moved to Vega, at another time and with one more attendee: a new Google event, a new UID.
    change(session, reservation, room_id=rooms[1].id, google_calendar_id=VEGA, google_event_id="abc123def1",
           start_at=reservation.start_at + timedelta(hours=2), end_at=reservation.end_at + timedelta(hours=2),
           attendees=["bob@example.com", "carol@example.com", "dan@example.com"])
    assert mail(session, mail_app, reservation.id) == "CANCEL 2 to 3, REQUEST 0 to 4"
    [first, _, cancel, request] = smtp_server.invitations(4)
    assert (cancel.method, cancel.uid, cancel.sequence) == ("CANCEL", "abc123def@google.com", 2)
    assert (cancel.organiser, cancel.location) == (ORION, "Orion")
    assert cancel.event["ORGANIZER"].params["CN"] == "Orion"
    assert cancel.start == first.start + timedelta(hours=1)  # as they hold it, not where it went
    assert sorted(cancel.recipients) == cancel.attendees == ["alice@example.com", "bob@example.com",
                                                             "carol@example.com"]
    assert (request.method, request.uid, request.sequence) == ("REQUEST", "abc123def1@google.com", 0)
    assert (request.organiser, request.location) == (VEGA, "Vega")
    assert "dan@example.com" in request.attendees


def test_no_cancel_for_a_uid_that_never_had_a_request(session, mail_app, reservation, smtp_server):
    change(session, reservation, status=ReservationStatus.CANCELLED)
    assert mail(session, mail_app, reservation.id) == "nothing to send"
    assert smtp_server.messages == []


def test_a_cancel_goes_once_to_everyone_who_holds_it(session, mail_app, reservation, smtp_server):
    mail(session, mail_app, reservation.id)
    change(session, reservation, status=ReservationStatus.CANCELLED, attendees=["bob@example.com"])
    assert mail(session, mail_app, reservation.id) == "CANCEL 1 to 3"
    assert mail(session, mail_app, reservation.id) == "nothing to send"
    [_, cancel] = smtp_server.invitations(2)
    assert (cancel.method, str(cancel.event["STATUS"])) == ("CANCEL", "CANCELLED")
    assert cancel.message["Subject"].startswith("Cancelled: Retro")
    assert "carol@example.com" in cancel.recipients  # she holds it, though the last edit dropped her


def test_nothing_goes_while_the_google_write_is_pending_nor_when_it_failed(
        session, mail_app, reservation, smtp_server):
    mail(session, mail_app, reservation.id)
    for status in (ReservationStatus.PENDING, ReservationStatus.FAILED):
        change(session, reservation, status=status, start_at=reservation.start_at + timedelta(hours=1),
               end_at=reservation.end_at + timedelta(hours=1))
        assert mail(session, mail_app, reservation.id) == "nothing to send"
    assert len(smtp_server.messages) == 1


def test_without_smtp_url_nothing_is_recorded_as_sent(make_app, smtp_server):
    app = make_app(SMTP_URL="")
    with app.app_context():
        session = db.session()
        room = make_room(session, calendar_id=ORION)
        booked = make_reservation(session, room, google_event_id="e1", google_calendar_id=ORION,
                                  status=ReservationStatus.CONFIRMED)
        session.commit()
        assert invitations.mail_invitations(session, app.config["ROOMBRIDGE"], booked.id) == "skipped (no SMTP_URL)"
        assert session.query(SentInvitation).count() == 0


def reservation_at_0007(session, room, start: datetime, **fields) -> int:
    """A reservation row as revision 0007 stored it: the model's columns added since (0010's) left out."""
    import sqlalchemy as sa

    existing = {column["name"] for column in sa.inspect(session.connection()).get_columns("reservations")}
    then = sa.Table("reservations", sa.MetaData(),
                    *(column._copy() for column in Reservation.__table__.c if column.name in existing))
    values = {"room_id": room.id, "organiser_email": "alice@example.com", "title": "Planning", "start_at": start,
              "end_at": start + timedelta(hours=1), "source": "api", "status": ReservationStatus.PENDING, **fields}
    return session.execute(sa.insert(then).values(**values)).inserted_primary_key[0]


def test_bookings_invited_before_0011_are_still_cancelled_after_it(mail_app, smtp_server):
    """The migration records what people hold of each booking Google had, so a later cancel still tells them."""
    from roombridge import migrate

    migrate.downgrade(mail_app, "0007")
    with mail_app.app_context():
        session = db.session()
        room = make_room(session, calendar_id=ORION, name="Orion", time_zone="Europe/Paris")
        held_id = reservation_at_0007(session, room, datetime(2030, 7, 1, 8, 0, tzinfo=UTC),
                                      attendees=["bob@example.com"], google_event_id="old1", google_calendar_id=ORION,
                                      status=ReservationStatus.CONFIRMED)
        never_written_id = reservation_at_0007(session, room, datetime(2030, 7, 2, 8, 0, tzinfo=UTC))
        session.commit()
        version = 1
    migrate.upgrade(mail_app)
    with mail_app.app_context():
        session = db.session()
        [record] = session.query(SentInvitation).all()
        assert (record.uid, record.reservation_id, record.method, record.sequence) == (
            "old1@google.com", held_id, "REQUEST", version)
        assert (record.organiser, record.location, record.time_zone) == (ORION, "Orion", "Europe/Paris")
        assert record.attendees == ["alice@example.com", "bob@example.com"]
        assert record.start_at == datetime(2030, 7, 1, 8, 0, tzinfo=UTC)
        change(session, session.get(Reservation, held_id), status=ReservationStatus.CANCELLED)
        assert mail(session, mail_app, held_id) == f"CANCEL {version + 1} to 2"
        assert mail(session, mail_app, never_written_id) == "nothing to send"
    [cancel] = smtp_server.invitations(1)
    assert (cancel.uid, cancel.organiser, cancel.start) == ("old1@google.com", ORION, datetime(2030, 7, 1, 8, 0,
                                                                                                  tzinfo=UTC))


def test_a_check_in_notice_is_seven_bit_and_one_subject_line_whatever_the_title(session, mail_app, reservation,
                                                                                 smtp_server):
    reservation.title = "Réunion\r\nBcc: everyone@example.org ☕"
    session.commit()
    message = invitations.notice_message(reservation, "released", mail_app.config["ROOMBRIDGE"])
    assert invitations.send(message, smtp_server.url)
    [(rcpts, received)] = smtp_server.wait_for(1)
    assert max(smtp_server.raw[0]) < 0x80
    assert rcpts == ["alice@example.com"] and received["Bcc"] is None
    assert received["Subject"] == "Released: Réunion Bcc: everyone@example.org ☕"
    assert "Réunion" in received.get_content()

"""iMIP invitations: the iCalendar object, the e-mail around it, and SMTP delivery."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from icalendar import Calendar

from roombridge import invitations
from tests.factories import make_reservation, make_room
from tests.support import free_port


@pytest.fixture
def reservation(session):
    room = make_room(session, calendar_id="room-orion@resource.calendar.google.com", name="Orion",
                     time_zone="Europe/Paris")
    made = make_reservation(session, room, datetime(2030, 7, 1, 8, 0, tzinfo=UTC), title="Retro",
                            description="Bring ideas", attendees=["bob@example.com", "carol@example.com"],
                            google_event_id="abc123def")
    session.commit()
    return made


def parse(invitation) -> Calendar:
    return Calendar.from_ical(invitation.ics)


def test_request_has_the_google_uid_the_room_as_organizer_and_every_attendee(reservation):
    invitation = invitations.build_invitation(reservation, "REQUEST")
    calendar = parse(invitation)
    assert calendar["METHOD"] == "REQUEST"
    [event] = calendar.walk("VEVENT")
    assert str(event["UID"]) == "abc123def@google.com" == invitation.uid
    assert str(event["ORGANIZER"]) == "mailto:room-orion@resource.calendar.google.com"
    assert event["ORGANIZER"].params["CN"] == "Orion"
    assert [str(a) for a in event["ATTENDEE"]] == [
        "mailto:alice@example.com", "mailto:bob@example.com", "mailto:carol@example.com"]
    assert event.decoded("DTSTART") == datetime(2030, 7, 1, 8, 0, tzinfo=UTC)
    assert event.decoded("DTEND") == datetime(2030, 7, 1, 9, 0, tzinfo=UTC)
    assert (str(event["SUMMARY"]), str(event["STATUS"]), str(event["LOCATION"])) == ("Retro", "CONFIRMED", "Orion")
    assert invitation.recipients == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert "10:00" in invitation.text  # shown in the room's zone: Paris is UTC+2 in July


def test_cancel_keeps_the_uid_and_a_higher_sequence_after_changes(session, reservation):
    before = int(parse(invitations.build_invitation(reservation, "REQUEST")).walk("VEVENT")[0]["SEQUENCE"])
    reservation.title = "Retro (moved)"
    session.commit()
    cancel = invitations.build_invitation(reservation, "CANCEL", recipients=["carol@example.com"])
    calendar = parse(cancel)
    assert calendar["METHOD"] == "CANCEL"
    [event] = calendar.walk("VEVENT")
    assert str(event["UID"]) == "abc123def@google.com"
    assert str(event["STATUS"]) == "CANCELLED"
    assert int(event["SEQUENCE"]) > before
    assert cancel.recipients == ["carol@example.com"]


def test_no_uid_before_google_has_the_event(session, reservation):
    reservation.google_event_id = None
    with pytest.raises(ValueError):
        invitations.build_invitation(reservation, "REQUEST")
    with pytest.raises(ValueError):
        invitations.build_invitation(reservation, "PUBLISH", event_id="x")


def test_the_mail_is_text_plus_calendar_and_arrives_over_smtp(reservation, smtp_server):
    invitation = invitations.build_invitation(reservation, "REQUEST")
    message = invitations.to_email(invitation, "rooms@example.com")
    assert invitations.send(message, smtp_server.url) is True
    [(rcpts, received)] = smtp_server.wait_for(1)
    assert sorted(rcpts) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert received.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part for part in received.iter_parts()}
    assert set(parts) == {"text/plain", "text/calendar"}
    assert parts["text/calendar"].get_param("method") == "REQUEST"
    assert Calendar.from_ical(parts["text/calendar"].get_content())["METHOD"] == "REQUEST"
    assert received["Subject"].startswith("Invitation: Retro")


def test_without_smtp_url_mail_is_skipped_and_a_dead_server_raises_for_retry(reservation):
    message = invitations.to_email(invitations.build_invitation(reservation, "REQUEST"), "rooms@example.com")
    assert invitations.send(message, "") is False
    port = free_port()  # nothing listens there
    with pytest.raises(OSError):
        invitations.send(message, f"smtp://127.0.0.1:{port}", timeout=2)

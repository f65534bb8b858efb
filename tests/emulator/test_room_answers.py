"""A room's own answer on its copy of a person's booking, and what an attendee may change."""

import pytest
import requests

from .support import ROOM, error_of

ALICE = "alice@example.com"


def room_entry(event):
    return next(a for a in event["attendees"] if a["email"] == ROOM)


def with_room_answer(event, answer):
    return [dict(a, responseStatus=answer) if a["email"] == ROOM else a
            for a in event["attendees"]]


@pytest.fixture
def booking(emulator, service):
    """Alice booked ROOM in Google; the room accepted; the app reads the room's copy."""
    made = emulator.state.book(ALICE, ROOM, "Planning", "2030-01-07T10:00:00Z",
                               "2030-01-07T11:00:00Z", attendees=["bob@example.com"])
    return service.events().get(calendarId=ROOM, eventId=made["id"]).execute()


def test_the_room_declines_on_its_copy_and_the_organizer_sees_it(emulator, service, booking):
    token = service.events().list(calendarId=ROOM).execute()["nextSyncToken"]

    declined = service.events().patch(
        calendarId=ROOM, eventId=booking["id"], sendUpdates="all",
        body={"attendees": with_room_answer(booking, "declined")}).execute()

    assert room_entry(declined)["responseStatus"] == "declined"
    assert declined["status"] == "confirmed"  # declined, never deleted
    organizers = requests.get(f"{emulator.url}/_emulator/people/{ALICE}/events/{booking['id']}",
                              timeout=5).json()
    assert organizers["status"] == "confirmed"
    assert room_entry(organizers)["responseStatus"] == "declined"
    assert {a["email"]: a["responseStatus"] for a in organizers["attendees"]} == {
        ALICE: "accepted", ROOM: "declined", "bob@example.com": "needsAction"}
    changes = service.events().list(calendarId=ROOM, syncToken=token).execute()["items"]
    assert [(e["id"], room_entry(e)["responseStatus"]) for e in changes] == [
        (booking["id"], "declined")]


def test_a_declined_slot_is_free_for_the_next_booking_and_stays_declined(emulator, service,
                                                                         booking):
    service.events().patch(calendarId=ROOM, eventId=booking["id"],
                           body={"attendees": with_room_answer(booking, "declined")}).execute()

    later = emulator.state.book("carol@example.com", ROOM, "Walk-in", "2030-01-07T10:00:00Z",
                                "2030-01-07T11:00:00Z")
    emulator.state.patch_person_event(ALICE, booking["id"], {"summary": "Planning (renamed)"})

    assert room_entry(later)["responseStatus"] == "accepted"
    room_copy = service.events().get(calendarId=ROOM, eventId=booking["id"]).execute()
    assert room_copy["summary"] == "Planning (renamed)"
    assert room_entry(room_copy)["responseStatus"] == "declined"


@pytest.mark.parametrize("change", [
    {"summary": "Taken over"},
    {"start": {"dateTime": "2030-01-07T09:00:00Z"}},
    {"extendedProperties": {"shared": {"owner": "app"}}},
    {"attendees": [{"email": ALICE}, {"email": ROOM, "responseStatus": "declined"}]},
])
def test_an_attendee_copy_refuses_changes_to_shared_properties(service, booking, change):
    with pytest.raises(Exception) as excinfo:
        service.events().patch(calendarId=ROOM, eventId=booking["id"], body=change).execute()

    assert error_of(excinfo) == (
        403, "forbiddenForNonOrganizer",
        "Shared properties can only be changed by the organizer of the event.")


def test_an_attendee_copy_keeps_its_own_private_properties(emulator, service, booking):
    patched = service.events().patch(
        calendarId=ROOM, eventId=booking["id"],
        body={"extendedProperties": {"private": {"roombridge": "released"}},
              "reminders": {"useDefault": False}}).execute()

    assert patched["extendedProperties"]["private"] == {"roombridge": "released"}
    organizers = emulator.state.person_event(ALICE, booking["id"])
    assert "extendedProperties" not in organizers


def test_an_unknown_response_status_is_invalid(service, booking):
    with pytest.raises(Exception) as excinfo:
        service.events().patch(calendarId=ROOM, eventId=booking["id"],
                               body={"attendees": with_room_answer(booking, "maybe")}).execute()

    assert error_of(excinfo)[:2] == (400, "invalid")

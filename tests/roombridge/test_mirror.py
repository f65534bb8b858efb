"""Mirroring rules, without HTTP or a database: Google event dicts in, changes out."""

from __future__ import annotations

from datetime import UTC, datetime

from roombridge.gcal import RESERVATION_PROPERTY, SIGNATURE_PROPERTY, event_id_for, own_properties
from roombridge.mirror import NO_TITLE, Action, decide, read_event
from roombridge.models import Reservation, ReservationSource, ReservationStatus
from tests.support import SERVICE_ACCOUNT

ROOM = "room-a@resource.calendar.google.com"
KEY = "test-secret"


def at(hour: int, minute: int = 0, day: int = 7) -> datetime:
    return datetime(2030, 1, day, hour, minute, tzinfo=UTC)


def person_booking(event_id="evt001abc", response="accepted", **overrides) -> dict:
    """A person's event as copied onto the room calendar (organizer the person, room self)."""
    event = {
        "id": event_id,
        "etag": '"1"',
        "status": "confirmed",
        "updated": "2030-01-01T09:00:00.000Z",
        "summary": "Design review",
        "description": "bring sketches",
        "organizer": {"email": "Bob@Example.com"},
        "creator": {"email": "bob@example.com"},
        "start": {"dateTime": "2030-01-07T11:00:00+01:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": "2030-01-07T12:00:00+01:00", "timeZone": "Europe/Paris"},
        "attendees": [
            {"email": "bob@example.com", "organizer": True, "responseStatus": "accepted"},
            {"email": ROOM, "resource": True, "self": True, "responseStatus": response},
            {"email": "carol@example.com", "responseStatus": "needsAction"},
        ],
    }
    event.update(overrides)
    return event


def reservation(**fields) -> Reservation:
    values = dict(
        id=10, room_id=1, organiser_email="alice@example.com", title="Planning", description="",
        start_at=at(10), end_at=at(11), all_day=False, attendees=[], status=ReservationStatus.CONFIRMED,
        source=ReservationSource.WEB, google_event_id=event_id_for(10), google_etag='"ours"',
        google_updated_at=datetime(2030, 1, 1, 8, 0, tzinfo=UTC),
    )
    values.update(fields)
    return Reservation(**values)


def test_reads_a_person_booking_as_the_room_sees_it():
    event = read_event(person_booking(), ROOM, "Europe/London")
    assert event.organiser_email == "bob@example.com"
    assert (event.start_at, event.end_at) == (at(10), at(11))
    assert event.room_response == "accepted"
    assert event.attendees == ("carol@example.com",)
    assert event.title == "Design review" and not event.all_day and event.is_booking


def test_all_day_event_covers_whole_days_in_the_room_time_zone():
    event = read_event(person_booking(start={"date": "2030-07-01"}, end={"date": "2030-07-03"}), ROOM, "Europe/London")
    # London is on summer time (UTC+1) in July: the days start at 23:00 UTC the evening before.
    assert event.start_at == datetime(2030, 6, 30, 23, 0, tzinfo=UTC)
    assert event.end_at == datetime(2030, 7, 2, 23, 0, tzinfo=UTC)
    assert event.all_day


def test_event_written_straight_onto_the_room_calendar_is_a_booking_by_its_creator():
    raw = person_booking(organizer={"email": ROOM, "self": True}, creator={"email": "dan@example.com"})
    del raw["attendees"]
    raw.pop("summary")
    event = read_event(raw, ROOM, "UTC")
    assert event.room_response is None and event.is_booking
    assert event.organiser_email == "dan@example.com"
    assert event.title == NO_TITLE
    change = decide(event, None, [])
    assert change.action is Action.CREATE
    assert change.fields["status"] == ReservationStatus.CONFIRMED


def test_google_booking_becomes_a_confirmed_google_reservation():
    change = decide(read_event(person_booking(), ROOM), None, [])
    assert change.action is Action.CREATE
    f = change.fields
    assert f["source"] == ReservationSource.GOOGLE and f["status"] == ReservationStatus.CONFIRMED
    assert f["google_event_id"] == "evt001abc" and f["google_etag"] == '"1"'
    assert f["organiser_email"] == "bob@example.com" and f["attendees"] == ["carol@example.com"]
    assert f["room_response"] == "accepted" and f["conflict_with_id"] is None


def test_needs_action_and_tentative_still_hold_the_room():
    for response in ("needsAction", "tentative"):
        change = decide(read_event(person_booking(response=response), ROOM), None, [])
        assert change.action is Action.CREATE and change.fields["room_response"] == response


def test_declined_event_is_not_a_booking_and_cancels_an_earlier_mirror():
    declined = read_event(person_booking(response="declined", etag='"2"'), ROOM)
    assert decide(declined, None, []).action is Action.NONE
    mirror = reservation(source=ReservationSource.GOOGLE, google_event_id="evt001abc", google_etag='"1"')
    change = decide(declined, mirror, [])
    assert change.action is Action.CANCEL
    assert change.fields["status"] == ReservationStatus.CANCELLED and change.fields["room_response"] == "declined"
    assert not change.notify_organiser


def test_google_booking_over_a_live_reservation_is_kept_as_a_conflict():
    clash = reservation(id=3, start_at=at(10, 30), end_at=at(11, 30))
    change = decide(read_event(person_booking(), ROOM), None, [clash])
    assert change.action is Action.CREATE
    assert change.fields["status"] == ReservationStatus.CONFLICT
    assert change.fields["conflict_with_id"] == 3


def test_change_and_cancel_of_a_google_booking():
    mirror = reservation(source=ReservationSource.GOOGLE, google_event_id="evt001abc", google_etag='"1"',
                         status=ReservationStatus.CONFLICT, conflict_with_id=3)
    moved = person_booking(etag='"2"', updated="2030-01-02T09:00:00.000Z",
                           start={"dateTime": "2030-01-07T15:00:00Z"}, end={"dateTime": "2030-01-07T16:00:00Z"})
    change = decide(read_event(moved, ROOM), mirror, [])
    assert change.action is Action.UPDATE
    assert (change.fields["start_at"], change.fields["end_at"]) == (at(15), at(16))
    assert change.fields["status"] == ReservationStatus.CONFIRMED and change.fields["conflict_with_id"] is None

    stub = {"id": "evt001abc", "status": "cancelled", "etag": '"3"'}
    change = decide(read_event(stub, ROOM), mirror, [])
    assert change.action is Action.CANCEL and change.fields["status"] == ReservationStatus.CANCELLED
    assert decide(read_event(stub, ROOM), None, []).action is Action.NONE


def test_same_etag_is_an_echo():
    mirror = reservation(source=ReservationSource.GOOGLE, google_event_id="evt001abc", google_etag='"1"')
    assert decide(read_event(person_booking(), ROOM), mirror, []).action is Action.NONE


def test_recurring_instance_carries_its_series():
    raw = person_booking(event_id="ser1abc_20300107T100000Z", recurringEventId="ser1abc",
                         originalStartTime={"dateTime": "2030-01-07T10:00:00Z"})
    change = decide(read_event(raw, ROOM), None, [])
    assert change.fields["google_recurring_event_id"] == "ser1abc"
    assert change.fields["series_id"] == "ser1abc"
    assert change.fields["google_event_id"] == "ser1abc_20300107T100000Z"


def own_event(**overrides) -> dict:
    """Our own reservation 10 as written by the push job (no attendees in room mode)."""
    event = {
        "id": event_id_for(10), "etag": '"ours"', "status": "confirmed", "updated": "2030-01-01T08:00:00.000Z",
        "summary": "Planning", "organizer": {"email": ROOM, "self": True},
        "creator": {"email": SERVICE_ACCOUNT},
        "start": {"dateTime": "2030-01-07T10:00:00Z"}, "end": {"dateTime": "2030-01-07T11:00:00Z"},
        "extendedProperties": {"private": own_properties(10, KEY)},
    }
    event.update(overrides)
    return event


def test_our_own_event_is_recognised_and_never_imported():
    event = read_event(own_event(), ROOM, signing_key=KEY)
    assert event.own_reservation_id == 10
    assert decide(event, reservation(), []).action is Action.NONE  # echo
    # Same content, new etag (seen before the push job stored its etag): still nothing to do.
    assert decide(read_event(own_event(etag='"x"', updated="2030-01-01T08:30:00.000Z"), ROOM, signing_key=KEY),
                  reservation(), []).action is Action.NONE
    # Ours by its property, but no reservation of ours here: not imported as a Google booking.
    assert decide(event, None, []).action is Action.NONE


def test_the_room_mode_footer_of_our_event_is_not_taken_for_a_new_description():
    from roombridge.publish import event_description

    ours = reservation(description="Quarterly plan", attendees=["bob@example.com"])
    text = event_description(ours, delegated=False)
    assert "bob@example.com" in text  # the footer is there on Google's side
    event = read_event(own_event(etag='"x"', updated="2030-01-01T08:30:00.000Z", description=text), ROOM)
    assert event.description == "Quarterly plan"
    assert decide(event, ours, []).action is Action.NONE


def test_our_event_moved_in_google_moves_the_reservation_and_tells_the_organiser():
    moved = own_event(etag='"g2"', updated="2030-01-02T08:00:00.000Z",
                      start={"dateTime": "2030-01-07T14:00:00Z"}, end={"dateTime": "2030-01-07T14:30:00Z"})
    change = decide(read_event(moved, ROOM), reservation(), [])
    assert change.action is Action.UPDATE and change.notify_organiser
    assert (change.fields["start_at"], change.fields["end_at"]) == (at(14), at(14, 30))
    assert "status" not in change.fields  # still confirmed
    assert "organiser_email" not in change.fields and "source" not in change.fields


def test_our_event_moved_onto_another_reservation_becomes_a_conflict():
    other = reservation(id=11, start_at=at(14), end_at=at(15))
    moved = own_event(etag='"g2"', updated="2030-01-02T08:00:00.000Z",
                      start={"dateTime": "2030-01-07T14:00:00Z"}, end={"dateTime": "2030-01-07T14:30:00Z"})
    change = decide(read_event(moved, ROOM), reservation(), [other])
    assert change.fields["status"] == ReservationStatus.CONFLICT
    assert change.fields["conflict_with_id"] == 11


def test_our_event_deleted_in_google_cancels_and_tells_the_organiser():
    stub = {"id": event_id_for(10), "status": "cancelled", "etag": '"g3"'}
    change = decide(read_event(stub, ROOM), reservation(), [])
    assert change.action is Action.CANCEL and change.notify_organiser
    assert change.fields["status_reason"] == "deleted in Google"


def test_a_stale_copy_never_revives_a_reservation_we_cancelled():
    mine = reservation(status=ReservationStatus.CANCELLED)
    newer = own_event(etag='"g9"', updated="2030-01-05T08:00:00.000Z", summary="Renamed")
    assert decide(read_event(newer, ROOM), mine, []).action is Action.NONE


def test_an_older_version_of_our_event_is_ignored():
    older = own_event(etag='"old"', updated="2029-12-31T08:00:00.000Z", summary="Old title")
    assert decide(read_event(older, ROOM), reservation(), []).action is Action.NONE


def _marks(**private) -> dict:
    return {"extendedProperties": {"private": private}}


def test_only_a_valid_signature_makes_an_event_ours_never_its_id_or_a_bare_property():
    signed = own_properties(10, KEY)
    assert read_event(own_event(), ROOM, signing_key=KEY).own_reservation_id == 10
    forged = [
        _marks(**{RESERVATION_PROPERTY: "10"}),  # our property copied, unsigned
        _marks(**{RESERVATION_PROPERTY: "11", SIGNATURE_PROPERTY: signed[SIGNATURE_PROPERTY]}),  # another id's
        _marks(**{RESERVATION_PROPERTY: "10", SIGNATURE_PROPERTY: own_properties(10, "other")[SIGNATURE_PROPERTY]}),
        _marks(**{RESERVATION_PROPERTY: "1²", SIGNATURE_PROPERTY: "ünï"}),  # '²'.isdigit() is True; int() refuses
        _marks(**{RESERVATION_PROPERTY: "١٠", SIGNATURE_PROPERTY: signed[SIGNATURE_PROPERTY]}),  # Arabic-Indic 10
    ]
    for marks in forged:
        assert read_event(own_event(**marks), ROOM, signing_key=KEY).own_reservation_id is None, marks
    assert read_event(own_event(), ROOM, signing_key=None).own_reservation_id is None


def test_text_google_sends_is_stored_without_nul_or_lone_surrogates():
    raw = person_booking(event_id="evt\x00nul", summary="Board\x00meeting \ud800", description="a\x00b\udfff",
                         attendees=[{"email": "carol\x00@example.com", "displayName": "C\x00arol \udc80"},
                                    {"email": ROOM, "resource": True, "self": True, "responseStatus": "accepted"}],
                         location="HQ\x00")
    event = read_event(raw, ROOM)
    assert (event.event_id, event.title, event.description) == ("evtnul", "Boardmeeting \ufffd", "ab\ufffd")
    assert event.attendees == ("carol@example.com",)
    for text in (event.event_id, event.title, event.description, *event.attendees, event.organiser_email):
        text.encode("utf-8")
        assert "\x00" not in text

"""Events insert/get/patch/update/delete and Google's rules around them."""

import pytest

from .support import ACCOUNT, OTHER_ROOM, ROOM, calendar_service, error_of, timed_event


def test_insert_then_get_returns_googles_event_shape(service):
    inserted = service.events().insert(calendarId=ROOM, body=timed_event(id="booking00001"),
                                       sendUpdates="none").execute()

    assert inserted["id"] == "booking00001"
    assert inserted["status"] == "confirmed"
    assert inserted["iCalUID"] == "booking00001@google.com"
    assert inserted["organizer"] == {"email": ROOM, "displayName": "Atlas", "self": True}
    assert inserted["creator"] == {"email": ACCOUNT}
    assert inserted["etag"].startswith('"') and inserted["etag"].endswith('"')
    assert inserted["updated"].endswith("Z") and len(inserted["updated"]) == 24
    assert inserted["sequence"] == 0
    assert service.events().get(calendarId=ROOM, eventId="booking00001").execute() == inserted


def test_send_updates_is_recorded_in_the_request_log(emulator, service):
    service.events().insert(calendarId=ROOM, body=timed_event(), sendUpdates="all").execute()

    assert emulator.state.requests(method="POST", calendar=ROOM)[0]["send_updates"] == "all"


def test_an_unshared_calendar_is_not_found(service):
    with pytest.raises(Exception) as excinfo:
        service.events().insert(calendarId=OTHER_ROOM, body=timed_event()).execute()

    assert error_of(excinfo) == (404, "notFound", "Not Found")


def test_a_reader_share_may_read_but_not_write(emulator, service):
    emulator.state.share(OTHER_ROOM, ACCOUNT, "reader")
    service.events().list(calendarId=OTHER_ROOM).execute()

    with pytest.raises(Exception) as excinfo:
        service.events().insert(calendarId=OTHER_ROOM, body=timed_event()).execute()

    assert error_of(excinfo) == (403, "requiredAccessLevel",
                                 "You need to have writer access to this calendar.")


@pytest.mark.parametrize("event_id", ["abc", "UPPERCASE1", "has-dash-1", "wxyz12345"])
def test_ids_outside_base32hex_or_too_short_are_invalid(service, event_id):
    with pytest.raises(Exception) as excinfo:
        service.events().insert(calendarId=ROOM, body=timed_event(id=event_id)).execute()

    assert error_of(excinfo) == (400, "invalid", "Invalid resource id value.")


def test_a_duplicate_id_and_a_deleted_id_are_both_409(service):
    service.events().insert(calendarId=ROOM, body=timed_event(id="dup0000001")).execute()
    service.events().insert(calendarId=ROOM, body=timed_event(id="gone000001")).execute()
    service.events().delete(calendarId=ROOM, eventId="gone000001").execute()

    for event_id in ("dup0000001", "gone000001"):
        with pytest.raises(Exception) as excinfo:
            service.events().insert(calendarId=ROOM, body=timed_event(id=event_id)).execute()
        assert error_of(excinfo) == (409, "duplicate", "The requested identifier already exists.")


def test_delete_keeps_a_cancelled_event_and_a_second_delete_is_410(service):
    service.events().insert(calendarId=ROOM, body=timed_event(id="cancel0001")).execute()
    service.events().delete(calendarId=ROOM, eventId="cancel0001").execute()

    assert service.events().get(calendarId=ROOM,
                                eventId="cancel0001").execute()["status"] == "cancelled"
    with pytest.raises(Exception) as excinfo:
        service.events().delete(calendarId=ROOM, eventId="cancel0001").execute()
    assert error_of(excinfo)[:2] == (410, "deleted")


def test_patch_merges_update_replaces_and_etags_and_sequence_move(service):
    first = service.events().insert(
        calendarId=ROOM, body=timed_event(id="edit000001", description="keep me")).execute()

    patched = service.events().patch(calendarId=ROOM, eventId="edit000001",
                                     body={"summary": "Renamed"}).execute()
    assert patched["description"] == "keep me" and patched["summary"] == "Renamed"
    assert patched["etag"] != first["etag"] and patched["sequence"] == 0

    moved = service.events().update(
        calendarId=ROOM, eventId="edit000001",
        body=timed_event("2030-01-07T12:00:00Z", "2030-01-07T13:00:00Z")).execute()
    assert "description" not in moved
    assert moved["sequence"] == 1 and moved["etag"] != patched["etag"]
    assert moved["created"] == first["created"]


def test_a_stale_if_match_is_412(service):
    first = service.events().insert(calendarId=ROOM, body=timed_event(id="etag000001")).execute()
    service.events().patch(calendarId=ROOM, eventId="etag000001", body={"summary": "x"}).execute()

    request = service.events().patch(calendarId=ROOM, eventId="etag000001", body={"summary": "y"})
    request.headers["If-Match"] = first["etag"]
    with pytest.raises(Exception) as excinfo:
        request.execute()

    assert error_of(excinfo) == (412, "conditionNotMet", "Precondition Failed")


def test_extended_properties_follow_googles_limits(service):
    long_key, ok_key = "k" * 45, "k" * 44
    event = service.events().insert(calendarId=ROOM, body=timed_event(
        extendedProperties={"private": {long_key: "dropped", ok_key: "v" * 1500,
                                        "reservation": "42"}})).execute()

    private = event["extendedProperties"]["private"]
    assert long_key not in private
    assert len(private[ok_key]) == 1024
    found = service.events().list(calendarId=ROOM,
                                  privateExtendedProperty="reservation=42").execute()
    assert [e["id"] for e in found["items"]] == [event["id"]]


def test_a_service_account_without_delegation_cannot_invite(service):
    with pytest.raises(Exception) as excinfo:
        service.events().insert(calendarId=ROOM, body=timed_event(
            attendees=[{"email": "alice@example.com"}])).execute()

    assert error_of(excinfo) == (
        403, "forbiddenForServiceAccounts",
        "Service accounts cannot invite attendees without Domain-Wide Delegation of Authority.")


def test_times_are_validated_like_google(service):
    cases = [
        ({"start": {"date": "2030-01-07"}, "end": {"dateTime": "2030-01-07T10:00:00Z"}},
         "invalid"),
        ({"start": {"dateTime": "2030-01-07T11:00:00Z"},
          "end": {"dateTime": "2030-01-07T10:00:00Z"}}, "timeRangeEmpty"),
        ({"start": {"dateTime": "2030-01-07T10:00:00"},
          "end": {"dateTime": "2030-01-07T11:00:00"}}, "required"),
    ]
    for body, reason in cases:
        with pytest.raises(Exception) as excinfo:
            service.events().insert(calendarId=ROOM, body=body).execute()
        assert error_of(excinfo)[:2] == (400, reason)


def test_local_times_with_a_time_zone_and_all_day_events_are_accepted(service):
    local = service.events().insert(calendarId=ROOM, body={
        "start": {"dateTime": "2030-07-01T09:00:00", "timeZone": "Europe/London"},
        "end": {"dateTime": "2030-07-01T10:00:00", "timeZone": "Europe/London"}}).execute()
    all_day = service.events().insert(calendarId=ROOM, body={
        "start": {"date": "2030-07-02"}, "end": {"date": "2030-07-03"}}).execute()

    window = service.events().list(calendarId=ROOM, timeMin="2030-07-01T08:30:00Z",
                                   timeMax="2030-07-01T08:45:00Z").execute()
    assert [e["id"] for e in window["items"]] == [local["id"]]
    assert all_day["start"] == {"date": "2030-07-02"}


def test_recurring_events_expand_with_single_events(service):
    series = service.events().insert(calendarId=ROOM, body={
        "summary": "Standup", "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4"],
        "start": {"dateTime": "2030-03-25T09:00:00", "timeZone": "Europe/London"},
        "end": {"dateTime": "2030-03-25T09:15:00", "timeZone": "Europe/London"}}).execute()

    instances = service.events().list(calendarId=ROOM, singleEvents=True,
                                      orderBy="startTime").execute()["items"]

    # British Summer Time starts on 31 March 2030: the wall-clock time stays 09:00.
    assert [i["id"] for i in instances] == [
        f"{series['id']}_20300325T090000Z", f"{series['id']}_20300327T090000Z",
        f"{series['id']}_20300401T080000Z", f"{series['id']}_20300403T080000Z"]
    assert {i["recurringEventId"] for i in instances} == {series["id"]}
    assert instances[0]["originalStartTime"] == instances[0]["start"]
    assert instances[0]["start"]["dateTime"] == "2030-03-25T09:00:00+00:00"
    assert instances[2]["start"]["dateTime"] == "2030-04-01T09:00:00+01:00"
    assert instances[2]["end"]["dateTime"] == "2030-04-01T09:15:00+01:00"
    unexpanded = service.events().list(calendarId=ROOM).execute()["items"]
    assert [e["id"] for e in unexpanded] == [series["id"]]


def test_order_by_start_time_needs_single_events(service):
    with pytest.raises(Exception) as excinfo:
        service.events().list(calendarId=ROOM, orderBy="startTime").execute()

    assert error_of(excinfo)[0] == 400


def test_events_written_as_another_principal_are_visible(emulator, key):
    emulator.state.share(OTHER_ROOM, ACCOUNT, "owner")
    service = calendar_service(emulator, key)

    emulator.state.insert_as(OTHER_ROOM, "bob@example.com", timed_event(id="bobs000001"))

    event = service.events().get(calendarId=OTHER_ROOM, eventId="bobs000001").execute()
    assert event["creator"] == {"email": "bob@example.com"}
    assert event["organizer"]["email"] == OTHER_ROOM

"""Recurring events written through the API: instances, exceptions, sync, ending a series."""

import pytest

from .support import ROOM, error_of

LONDON = "Europe/London"
ALICE = "alice@example.com"


def series_body(event_id="series0001", rule="RRULE:FREQ=WEEKLY;COUNT=5", *extra, **fields):
    """Mondays 09:00-10:00 London from 11 March 2030 (BST starts on 31 March)."""
    return {"id": event_id, "summary": "Weekly", "recurrence": [rule, *extra],
            "start": {"dateTime": "2030-03-11T09:00:00", "timeZone": LONDON},
            "end": {"dateTime": "2030-03-11T10:00:00", "timeZone": LONDON}, **fields}


def instance_ids(items):
    return [(i["id"], i["status"]) for i in items]


def all_instances(service, event_id="series0001", **query):
    return service.events().instances(calendarId=ROOM, eventId=event_id, **query).execute()


@pytest.mark.parametrize("side", ["start", "end"])
def test_a_timed_series_without_a_time_zone_is_refused(service, side):
    body = series_body()
    body[side] = {"dateTime": body[side]["dateTime"] + "Z"}

    with pytest.raises(Exception) as excinfo:
        service.events().insert(calendarId=ROOM, body=body).execute()

    assert error_of(excinfo) == (400, "required", f"Missing time zone definition for {side} time.")


def test_an_all_day_series_needs_no_time_zone(service):
    service.events().insert(calendarId=ROOM, body={
        "recurrence": ["RRULE:FREQ=DAILY;COUNT=2"], "start": {"date": "2030-03-11"},
        "end": {"date": "2030-03-12"}}).execute()


def test_instances_skip_exdates_in_either_form_and_page(service):
    service.events().insert(calendarId=ROOM, body=series_body(
        "series0001", "RRULE:FREQ=WEEKLY;COUNT=5", "EXDATE;TZID=Europe/London:20300318T090000",
        "EXDATE:20300401T080000Z")).execute()

    first = all_instances(service, maxResults=2)
    rest = all_instances(service, maxResults=2, pageToken=first["nextPageToken"])

    assert [i["id"] for i in first["items"] + rest["items"]] == [
        "series0001_20300311T090000Z", "series0001_20300325T090000Z",
        "series0001_20300408T080000Z"]
    assert "nextPageToken" not in rest
    assert rest["items"][0]["start"] == {"dateTime": "2030-04-08T09:00:00+01:00",
                                         "timeZone": LONDON}
    one = all_instances(service, originalStart="2030-03-25T09:00:00Z")["items"]
    assert [i["id"] for i in one] == ["series0001_20300325T090000Z"]


def test_patching_an_instance_stores_an_exception_in_place(service):
    series = service.events().insert(calendarId=ROOM, body=series_body()).execute()

    moved = service.events().patch(
        calendarId=ROOM, eventId="series0001_20300318T090000Z",
        body={"summary": "Moved once", "start": {"dateTime": "2030-03-19T14:00:00",
                                                 "timeZone": LONDON},
              "end": {"dateTime": "2030-03-19T15:00:00", "timeZone": LONDON}}).execute()

    assert moved["id"] == "series0001_20300318T090000Z"
    assert moved["recurringEventId"] == "series0001"
    assert moved["originalStartTime"] == {"dateTime": "2030-03-18T09:00:00+00:00",
                                          "timeZone": LONDON}
    assert moved["iCalUID"] == series["iCalUID"] and "recurrence" not in moved
    assert service.events().get(calendarId=ROOM, eventId=moved["id"]).execute() == moved
    master = service.events().get(calendarId=ROOM, eventId="series0001").execute()
    assert master["recurrence"] == series["recurrence"] and master["etag"] == series["etag"]

    singles = service.events().list(calendarId=ROOM, singleEvents=True,
                                    orderBy="startTime").execute()["items"]
    assert [(i["id"], i["summary"], i["start"]["dateTime"]) for i in singles[:3]] == [
        ("series0001_20300311T090000Z", "Weekly", "2030-03-11T09:00:00+00:00"),
        ("series0001_20300318T090000Z", "Moved once", "2030-03-19T14:00:00"),
        ("series0001_20300325T090000Z", "Weekly", "2030-03-25T09:00:00+00:00")]
    assert len(singles) == 5
    assert [i["id"] for i in all_instances(service)["items"]][1] == moved["id"]
    # Without singleEvents: the series plus its exceptions.
    assert {e["id"] for e in service.events().list(calendarId=ROOM).execute()["items"]} == {
        "series0001", moved["id"]}


def test_a_deleted_instance_is_a_cancelled_exception(service):
    service.events().insert(calendarId=ROOM, body=series_body()).execute()
    token = service.events().list(calendarId=ROOM, singleEvents=True).execute()["nextSyncToken"]

    service.events().delete(calendarId=ROOM, eventId="series0001_20300325T090000Z").execute()

    stub = {"kind": "calendar#event", "id": "series0001_20300325T090000Z",
            "status": "cancelled", "recurringEventId": "series0001",
            "originalStartTime": {"dateTime": "2030-03-25T09:00:00+00:00", "timeZone": LONDON}}
    changes = service.events().list(calendarId=ROOM, singleEvents=True,
                                    syncToken=token).execute()["items"]
    assert [dict(c, etag=None) for c in changes] == [dict(stub, etag=None)]
    assert "series0001_20300325T090000Z" not in [
        i["id"] for i in all_instances(service)["items"]]
    shown = all_instances(service, showDeleted=True)["items"]
    assert instance_ids(shown)[2] == ("series0001_20300325T090000Z", "cancelled")
    assert set(shown[2]) == set(stub) | {"etag"}
    with pytest.raises(Exception) as excinfo:
        service.events().delete(calendarId=ROOM, eventId="series0001_20300325T090000Z"
                                ).execute()
    assert error_of(excinfo)[:2] == (410, "deleted")


def test_sync_reports_only_the_changed_instance(service):
    service.events().insert(calendarId=ROOM, body=series_body()).execute()
    token = service.events().list(calendarId=ROOM, singleEvents=True).execute()["nextSyncToken"]

    service.events().patch(calendarId=ROOM, eventId="series0001_20300311T090000Z",
                           body={"description": "agenda"}).execute()

    changes = service.events().list(calendarId=ROOM, singleEvents=True,
                                    syncToken=token).execute()["items"]
    assert [(c["id"], c["description"]) for c in changes] == [
        ("series0001_20300311T090000Z", "agenda")]


def test_ending_a_series_with_until_cancels_the_rest_and_their_exceptions(service):
    service.events().insert(calendarId=ROOM, body=series_body()).execute()
    service.events().patch(calendarId=ROOM, eventId="series0001_20300401T080000Z",
                           body={"summary": "Special"}).execute()
    token = service.events().list(calendarId=ROOM, singleEvents=True).execute()["nextSyncToken"]

    # "This and following" from 25 March: the series ends before it.
    service.events().patch(calendarId=ROOM, eventId="series0001", body={
        "recurrence": ["RRULE:FREQ=WEEKLY;UNTIL=20300324T235959Z"]}).execute()

    changes = service.events().list(calendarId=ROOM, singleEvents=True,
                                    syncToken=token).execute()["items"]
    assert sorted(instance_ids(changes)) == [
        ("series0001_20300311T090000Z", "confirmed"), ("series0001_20300318T090000Z", "confirmed"),
        ("series0001_20300325T090000Z", "cancelled"), ("series0001_20300401T080000Z", "cancelled"),
        ("series0001_20300408T080000Z", "cancelled")]
    assert instance_ids(all_instances(service)["items"]) == [
        ("series0001_20300311T090000Z", "confirmed"), ("series0001_20300318T090000Z", "confirmed")]


def test_deleting_the_series_cancels_its_exceptions(service):
    service.events().insert(calendarId=ROOM, body=series_body()).execute()
    service.events().patch(calendarId=ROOM, eventId="series0001_20300311T090000Z",
                           body={"summary": "First"}).execute()

    service.events().delete(calendarId=ROOM, eventId="series0001").execute()

    listed = service.events().list(calendarId=ROOM, singleEvents=True).execute()["items"]
    assert listed == []
    first = service.events().get(calendarId=ROOM, eventId="series0001_20300311T090000Z").execute()
    assert first["status"] == "cancelled"


def test_a_room_declines_one_occurrence_of_a_persons_series(emulator, service):
    made = emulator.state.book(ALICE, ROOM, "Weekly sync", "2030-03-11T09:00:00Z",
                               "2030-03-11T10:00:00Z", recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"])
    instance_id = f"{made['id']}_20300318T090000Z"
    instance = service.events().get(calendarId=ROOM, eventId=instance_id).execute()

    service.events().patch(calendarId=ROOM, eventId=instance_id, body={"attendees": [
        dict(a, responseStatus="declined") if a["email"] == ROOM else a
        for a in instance["attendees"]]}).execute()

    def room_answers(event):
        return next(a["responseStatus"] for a in event["attendees"] if a["email"] == ROOM)

    organizers = emulator.state.person_event(ALICE, instance_id)
    assert organizers["recurringEventId"] == made["id"]
    assert room_answers(organizers) == "declined"
    assert room_answers(emulator.state.person_event(ALICE, f"{made['id']}_20300325T090000Z")
                        ) == "accepted"
    # The declined occurrence no longer holds the room.
    clash = emulator.state.book("carol@example.com", ROOM, "Walk-in", "2030-03-18T09:00:00Z",
                                "2030-03-18T10:00:00Z")
    assert room_answers(clash) == "accepted"


def test_a_person_moving_one_occurrence_moves_the_rooms_copy(emulator, service):
    made = emulator.state.book(ALICE, ROOM, "Weekly sync", "2030-03-11T09:00:00Z",
                               "2030-03-11T10:00:00Z", recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"])
    instance_id = f"{made['id']}_20300318T090000Z"

    emulator.state.patch_person_event(ALICE, instance_id, {
        "start": "2030-03-18T09:30:00Z", "end": "2030-03-18T10:30:00Z"})

    room_copy = service.events().get(calendarId=ROOM, eventId=instance_id).execute()
    assert room_copy["start"]["dateTime"] == "2030-03-18T09:30:00Z"
    assert room_copy["recurringEventId"] == made["id"]
    # Its own series instance at 09:00 does not clash with it: the room still accepts.
    assert next(a["responseStatus"] for a in room_copy["attendees"]
                if a["email"] == ROOM) == "accepted"


def test_a_series_change_reaches_exceptions_that_did_not_override_it(service):
    service.events().insert(calendarId=ROOM, body=series_body(description="v1")).execute()
    service.events().patch(calendarId=ROOM, eventId="series0001_20300311T090000Z", body={
        "start": {"dateTime": "2030-03-11T11:00:00", "timeZone": LONDON},
        "end": {"dateTime": "2030-03-11T12:00:00", "timeZone": LONDON}}).execute()
    service.events().patch(calendarId=ROOM, eventId="series0001_20300318T090000Z",
                           body={"summary": "Own title"}).execute()

    service.events().patch(calendarId=ROOM, eventId="series0001",
                           body={"summary": "Renamed", "description": "v2"}).execute()

    items = all_instances(service)["items"]
    assert [(i["summary"], i["description"], i["start"]["dateTime"]) for i in items[:3]] == [
        ("Renamed", "v2", "2030-03-11T11:00:00"), ("Own title", "v2", "2030-03-18T09:00:00+00:00"),
        ("Renamed", "v2", "2030-03-25T09:00:00+00:00")]

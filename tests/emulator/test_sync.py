"""events.list paging and incremental sync, as the sync engine will drive them."""

import pytest

from .support import ROOM, error_of, timed_event


def _insert_many(service, count):
    return [service.events().insert(calendarId=ROOM, body=timed_event(
        f"2030-01-{7 + i:02d}T10:00:00Z", f"2030-01-{7 + i:02d}T11:00:00Z",
        id=f"event{i:05d}")).execute() for i in range(count)]


def _all_pages(service, **query):
    pages = [service.events().list(calendarId=ROOM, **query).execute()]
    while "nextPageToken" in pages[-1]:
        pages.append(service.events().list(calendarId=ROOM, pageToken=pages[-1]["nextPageToken"],
                                           **query).execute())
    return pages


def test_max_results_pages_and_only_the_last_page_has_a_sync_token(service):
    _insert_many(service, 5)

    pages = _all_pages(service, maxResults=2)

    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert all("nextSyncToken" not in p for p in pages[:-1])
    assert "nextSyncToken" in pages[-1] and "nextPageToken" not in pages[-1]
    assert [e["id"] for p in pages for e in p["items"]] == [f"event{i:05d}" for i in range(5)]


def test_short_and_empty_pages_still_reach_the_end(emulator, service):
    _insert_many(service, 3)

    emulator.state.update_settings(page_size_cap=1)
    assert [len(p["items"]) for p in _all_pages(service, maxResults=10)] == [1, 1, 1]

    emulator.state.update_settings(page_size_cap=0)
    pages = _all_pages(service, maxResults=10)
    assert [len(p["items"]) for p in pages] == [0, 1, 0, 1, 0, 1]
    assert "nextPageToken" in pages[0] and "nextSyncToken" in pages[-1]


def test_page_tokens_keep_the_original_query(service):
    _insert_many(service, 4)

    first = service.events().list(calendarId=ROOM, maxResults=1,
                                  timeMin="2030-01-08T00:00:00Z").execute()
    rest = service.events().list(calendarId=ROOM, maxResults=1,
                                 pageToken=first["nextPageToken"]).execute()

    assert [first["items"][0]["id"], rest["items"][0]["id"]] == ["event00001", "event00002"]


def test_incremental_sync_returns_changes_and_cancelled_deletions(service):
    _insert_many(service, 3)
    token = _all_pages(service)[-1]["nextSyncToken"]

    service.events().patch(calendarId=ROOM, eventId="event00000", body={"summary": "Moved"}
                           ).execute()
    service.events().delete(calendarId=ROOM, eventId="event00001").execute()
    service.events().insert(calendarId=ROOM, body=timed_event(id="event00009")).execute()
    changes = service.events().list(calendarId=ROOM, syncToken=token).execute()

    by_id = {e["id"]: e for e in changes["items"]}
    assert set(by_id) == {"event00000", "event00001", "event00009"}
    assert by_id["event00000"]["summary"] == "Moved"
    assert by_id["event00001"]["status"] == "cancelled"
    assert "nextSyncToken" in changes

    quiet = service.events().list(calendarId=ROOM, syncToken=changes["nextSyncToken"]).execute()
    assert quiet["items"] == []


def test_changes_between_pages_arrive_in_the_next_sync(service):
    _insert_many(service, 3)
    first = service.events().list(calendarId=ROOM, maxResults=2).execute()
    service.events().patch(calendarId=ROOM, eventId="event00002", body={"summary": "Late"}
                           ).execute()

    last = service.events().list(calendarId=ROOM, maxResults=2,
                                 pageToken=first["nextPageToken"]).execute()
    changes = service.events().list(calendarId=ROOM, syncToken=last["nextSyncToken"]).execute()

    assert [e["summary"] for e in changes["items"]] == ["Late"]


@pytest.mark.parametrize("param", [
    {"timeMin": "2030-01-01T00:00:00Z"}, {"timeMax": "2030-01-01T00:00:00Z"}, {"q": "x"},
    {"orderBy": "updated"}, {"iCalUID": "x@google.com"}, {"privateExtendedProperty": "a=b"},
    {"sharedExtendedProperty": "a=b"}, {"updatedMin": "2030-01-01T00:00:00Z"}])
def test_filters_are_refused_with_a_sync_token(service, param):
    token = service.events().list(calendarId=ROOM).execute()["nextSyncToken"]

    with pytest.raises(Exception) as excinfo:
        service.events().list(calendarId=ROOM, syncToken=token, **param).execute()

    assert error_of(excinfo)[:2] == (400, "invalid")


def test_expired_sync_tokens_answer_410_full_sync_required(emulator, service):
    token = service.events().list(calendarId=ROOM).execute()["nextSyncToken"]
    emulator.state.expire_sync_tokens(ROOM)

    for stale in (token, "not-a-token"):
        with pytest.raises(Exception) as excinfo:
            service.events().list(calendarId=ROOM, syncToken=stale).execute()
        assert error_of(excinfo) == (410, "fullSyncRequired",
                                     "Sync token is no longer valid, a full sync is required.")

    fresh = service.events().list(calendarId=ROOM).execute()["nextSyncToken"]
    service.events().list(calendarId=ROOM, syncToken=fresh).execute()


def test_max_results_is_capped_at_2500(service):
    _insert_many(service, 1)

    assert len(service.events().list(calendarId=ROOM, maxResults=5000).execute()["items"]) == 1


def test_series_changes_show_up_as_instance_changes(service):
    series = service.events().insert(calendarId=ROOM, body={
        "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"],
        "start": {"dateTime": "2030-05-01T10:00:00", "timeZone": "Europe/London"},
        "end": {"dateTime": "2030-05-01T11:00:00", "timeZone": "Europe/London"}}).execute()
    token = service.events().list(calendarId=ROOM, singleEvents=True).execute()["nextSyncToken"]

    service.events().delete(calendarId=ROOM,
                            eventId=f"{series['id']}_20300502T090000Z").execute()
    shortened = service.events().list(calendarId=ROOM, syncToken=token, singleEvents=True
                                      ).execute()
    # The deletion is a cancelled exception; the series' rule is not rewritten.
    assert shortened["items"] == [{
        "kind": "calendar#event", "etag": shortened["items"][0]["etag"],
        "id": f"{series['id']}_20300502T090000Z", "status": "cancelled",
        "recurringEventId": series["id"],
        "originalStartTime": {"dateTime": "2030-05-02T10:00:00+01:00",
                              "timeZone": "Europe/London"}}]
    assert service.events().get(calendarId=ROOM, eventId=series["id"]).execute()[
        "recurrence"] == ["RRULE:FREQ=DAILY;COUNT=3"]

    service.events().delete(calendarId=ROOM, eventId=series["id"]).execute()
    gone = service.events().list(calendarId=ROOM, syncToken=shortened["nextSyncToken"],
                                 singleEvents=True).execute()
    assert {e["id"]: e["status"] for e in gone["items"]} == {
        f"{series['id']}_20300501T090000Z": "cancelled",
        f"{series['id']}_20300503T090000Z": "cancelled"}
    assert all(e["recurringEventId"] == series["id"] for e in gone["items"])


def test_show_deleted_and_updated_min(emulator, service):
    _insert_many(service, 2)
    service.events().delete(calendarId=ROOM, eventId="event00000").execute()

    visible = service.events().list(calendarId=ROOM).execute()["items"]
    everything = service.events().list(calendarId=ROOM, showDeleted=True).execute()["items"]
    assert [e["id"] for e in visible] == ["event00001"]
    assert {e["id"] for e in everything} == {"event00000", "event00001"}

    emulator.state.advance_clock(60)
    later = emulator.state.clock_info()["now"]
    service.events().patch(calendarId=ROOM, eventId="event00001", body={"summary": "x"}).execute()
    recent = service.events().list(calendarId=ROOM, updatedMin=later).execute()["items"]
    assert [e["id"] for e in recent] == ["event00001"]

"""The control API: faults, the request log, people booking rooms, demo data, reset."""

import json

import pytest
import requests

from emulator import DEMO_ROOMS, DEMO_SERVICE_ACCOUNT, seed_demo

from .support import ROOM, calendar_service, error_of, timed_event


def test_faults_fail_the_next_matching_calls_with_googles_body(emulator, service):
    emulator.state.add_fault(403, times=2, method="POST", reason="rateLimitExceeded")

    for _ in range(2):
        with pytest.raises(Exception) as excinfo:
            service.events().insert(calendarId=ROOM, body=timed_event()).execute()
        assert error_of(excinfo) == (403, "rateLimitExceeded", "Rate Limit Exceeded")
        body = json.loads(excinfo.value.content)["error"]
        assert body["errors"][0]["domain"] == "usageLimits"
        assert body["status"] == "PERMISSION_DENIED"
    service.events().list(calendarId=ROOM).execute()
    service.events().insert(calendarId=ROOM, body=timed_event()).execute()


def test_faults_can_target_a_path_and_be_cleared(emulator, service):
    emulator.state.add_fault(503, times=5, path_regex=r"/events$", calendar=ROOM)

    with pytest.raises(Exception) as excinfo:
        service.events().list(calendarId=ROOM).execute()
    assert error_of(excinfo)[:2] == (503, "backendError")

    emulator.state.clear_faults()
    service.events().list(calendarId=ROOM).execute()


def test_the_request_log_counts_api_calls_but_not_control_calls(emulator, service):
    service.events().list(calendarId=ROOM).execute()
    requests.get(emulator.url + "/_emulator/calendars", timeout=5)

    log = requests.get(emulator.url + "/_emulator/requests",
                       params={"calendar": ROOM, "method": "GET"}, timeout=5).json()
    assert [(e["method"], e["status"]) for e in log] == [("GET", 200)]
    assert requests.delete(emulator.url + "/_emulator/requests", timeout=5).status_code == 204
    assert emulator.state.requests() == []


def test_a_person_books_a_free_room_and_it_accepts(emulator, service):
    event = emulator.state.book("alice@example.com", ROOM, "Planning",
                                "2030-01-07T10:00:00Z", "2030-01-07T11:00:00Z",
                                attendees=["bob@example.com"])

    room_view = service.events().get(calendarId=ROOM, eventId=event["id"]).execute()
    assert room_view["iCalUID"] == event["iCalUID"]
    assert room_view["organizer"]["email"] == "alice@example.com"
    assert "self" not in room_view["organizer"]
    room_attendee = next(a for a in room_view["attendees"] if a["email"] == ROOM)
    assert room_attendee == {"email": ROOM, "resource": True, "displayName": "Atlas",
                             "responseStatus": "accepted", "self": True}
    person_view = emulator.state.raw_events("alice@example.com")[0]
    assert person_view["organizer"]["self"] is True


def test_a_clashing_booking_is_declined_and_moving_it_re_evaluates(emulator, service):
    service.events().insert(calendarId=ROOM, body=timed_event()).execute()

    event = emulator.state.book("bob@example.com", ROOM, "Clash",
                                "2030-01-07T10:30:00Z", "2030-01-07T11:30:00Z")
    assert _room_answer(emulator, event["id"]) == "declined"

    emulator.state.patch_person_event("bob@example.com", event["id"],
                                      {"start": "2030-01-07T11:00:00Z",
                                       "end": "2030-01-07T12:00:00Z"})
    assert _room_answer(emulator, event["id"]) == "accepted"


def test_a_recurring_booking_clashing_on_one_instance_is_declined(emulator, service):
    service.events().insert(calendarId=ROOM, body=timed_event(
        "2030-01-09T10:00:00Z", "2030-01-09T11:00:00Z")).execute()

    event = emulator.state.book("carol@example.com", ROOM, "Daily", "2030-01-07T10:00:00Z",
                                "2030-01-07T10:30:00Z", recurrence=["RRULE:FREQ=DAILY;COUNT=5"],
                                time_zone="Europe/London")

    assert _room_answer(emulator, event["id"]) == "declined"


def test_cancelling_a_booking_cancels_the_room_copy_and_syncs(emulator, service):
    token = service.events().list(calendarId=ROOM).execute()["nextSyncToken"]
    event = emulator.state.book("alice@example.com", ROOM, "Soon cancelled",
                                "2030-01-07T10:00:00Z", "2030-01-07T11:00:00Z")

    emulator.state.delete_person_event("alice@example.com", event["id"])

    changes = service.events().list(calendarId=ROOM, syncToken=token).execute()["items"]
    assert [(e["id"], e["status"]) for e in changes] == [(event["id"], "cancelled")]


def test_the_http_control_api_sets_up_a_world(emulator):
    base = emulator.url + "/_emulator"
    account = "bot@project.iam.gserviceaccount.com"
    key = requests.post(base + "/service-accounts", json={"email": account}, timeout=5).json()
    requests.post(base + "/calendars", json={"id": ROOM, "summary": "Atlas", "kind": "room",
                                             "capacity": 8, "features": ["display"]}, timeout=5)
    requests.post(f"{base}/calendars/{ROOM}/acl", json={"email": account, "role": "writer"},
                  timeout=5)
    booked = requests.post(f"{base}/people/alice@example.com/book", json={
        "room": ROOM, "summary": "Chat", "start": "2030-01-07T10:00:00Z",
        "end": "2030-01-07T11:00:00Z"}, timeout=5)
    assert booked.status_code == 201

    service = calendar_service(emulator, key)
    items = service.events().list(calendarId=ROOM).execute()["items"]
    assert [e["summary"] for e in items] == ["Chat"]
    calendars = requests.get(base + "/calendars", timeout=5).json()
    assert {c["id"]: c["acl"] for c in calendars}[ROOM] == {account: "writer"}

    requests.post(base + "/clock/advance", json={"seconds": 7200}, timeout=5)
    assert requests.get(base + "/clock", timeout=5).json()["offset_seconds"] == 7200
    assert requests.post(base + "/reset", timeout=5).json() == {"ok": True}
    assert requests.get(base + "/calendars", timeout=5).json() == []
    assert requests.get(base + "/clock", timeout=5).json()["offset_seconds"] == 0


def test_seed_demo_shares_every_room_with_the_service_account(emulator, tmp_path):
    key_path = tmp_path / "key.json"
    key = seed_demo(emulator, key_out=str(key_path))

    assert json.loads(key_path.read_text()) == key
    assert key["client_email"] == DEMO_SERVICE_ACCOUNT
    service = calendar_service(emulator, key)
    for room in DEMO_ROOMS:
        assert service.events().list(calendarId=room["email"]).execute()["accessRole"] == "writer"
    with pytest.raises(Exception) as excinfo:
        service.events().list(calendarId="alice@example.com").execute()
    assert error_of(excinfo)[0] == 404


def _room_answer(emulator, event_id):
    copy = next(e for e in emulator.state.raw_events(ROOM) if e["id"] == event_id)
    return next(a["responseStatus"] for a in copy["attendees"] if a["email"] == ROOM)

"""Google's per-minute quotas and per-calendar write pacing, as clients meet them."""

import json
import os
import subprocess
import sys

import pytest
import requests

from .support import ACCOUNT, OTHER_ROOM, ROOM, calendar_service, error_of, timed_event

SECOND_ACCOUNT = "reports@demo-project.iam.gserviceaccount.com"
OTHER_PROJECT_ACCOUNT = "roombridge@other-project.iam.gserviceaccount.com"


def refused(call):
    with pytest.raises(Exception) as excinfo:
        call.execute()
    body = json.loads(excinfo.value.content)["error"]
    assert body["errors"][0]["domain"] == "usageLimits"
    return error_of(excinfo)


def test_quotas_are_off_unless_turned_on(emulator, service):
    emulator.state.update_settings(quota_per_user=2, quota_per_project=2)

    for _ in range(5):
        service.events().list(calendarId=ROOM).execute()

    assert emulator.state.quota_usage()["users"] == {}


def test_past_the_per_user_limit_google_answers_403_user_rate_limit_exceeded(emulator, service):
    emulator.state.update_settings(quota_enabled=True, quota_per_user=3)
    for _ in range(3):
        service.events().list(calendarId=ROOM).execute()

    assert refused(service.events().insert(calendarId=ROOM, body=timed_event())) == (
        403, "userRateLimitExceeded", "User Rate Limit Exceeded")

    log = emulator.state.requests(calendar=ROOM)
    assert [(e["status"], e["refused_by_quota"], e["principal"]) for e in log] == [
        (200, None, ACCOUNT)] * 3 + [(403, "user", ACCOUNT)]
    # Refused calls are not counted: once the first calls leave the window, calls pass again.
    assert emulator.state.quota_usage()["users"] == {ACCOUNT: 3}
    emulator.state.advance_clock(61)
    service.events().list(calendarId=ROOM).execute()


def test_the_per_user_answer_can_be_429(emulator, service):
    emulator.state.update_settings(quota_enabled=True, quota_per_user=1, quota_user_status=429)
    service.events().list(calendarId=ROOM).execute()

    assert refused(service.events().list(calendarId=ROOM)) == (
        429, "rateLimitExceeded", "Rate Limit Exceeded")


def test_the_window_slides_rather_than_resetting_each_minute(emulator, service):
    emulator.state.update_settings(quota_enabled=True, quota_per_user=4)
    service.events().list(calendarId=ROOM).execute()
    emulator.state.advance_clock(40)
    for _ in range(3):
        service.events().list(calendarId=ROOM).execute()
    emulator.state.advance_clock(30)

    # 70 s after the first call only it has left the window: one more call fits, not two.
    service.events().list(calendarId=ROOM).execute()
    assert refused(service.events().list(calendarId=ROOM))[:2] == (403, "userRateLimitExceeded")


def test_each_principal_has_its_own_user_quota_inside_the_projects(emulator, service):
    state = emulator.state
    second = calendar_service(emulator, emulator.create_service_account(SECOND_ACCOUNT))
    state.share(ROOM, SECOND_ACCOUNT, "writer")
    delegating_key = emulator.create_service_account(OTHER_PROJECT_ACCOUNT, delegation=True)
    state.add_user("booker@example.com")
    state.share(ROOM, "booker@example.com", "writer")
    delegated = calendar_service(emulator, delegating_key, subject="booker@example.com")
    state.update_settings(quota_enabled=True, quota_per_user=2, quota_per_project=3)

    for client in (service, service, second):
        client.events().list(calendarId=ROOM).execute()
    # demo-project has used its 3 calls: the project's limit answers, even for a fresh user.
    assert refused(second.events().list(calendarId=ROOM)) == (
        403, "rateLimitExceeded", "Rate Limit Exceeded")
    # Another project, and the delegated user is the principal that is counted.
    for _ in range(2):
        delegated.events().list(calendarId=ROOM).execute()

    usage = requests.get(emulator.url + "/_emulator/quota", timeout=5).json()
    assert usage["enabled"] is True
    assert usage["users"] == {ACCOUNT: 2, SECOND_ACCOUNT: 1, "booker@example.com": 2}
    assert usage["projects"] == {"demo-project": 3, "other-project": 2}
    assert [e["refused_by_quota"] for e in state.requests(calendar=ROOM)].count("project") == 1


def test_quick_successive_writes_to_one_calendar_are_paced(emulator, service):
    emulator.state.share(OTHER_ROOM, ACCOUNT, "writer")
    emulator.state.update_settings(quota_enabled=True, calendar_write_interval=5)
    service.events().insert(calendarId=ROOM, body=timed_event(id="paced00001")).execute()

    assert refused(service.events().patch(calendarId=ROOM, eventId="paced00001",
                                          body={"summary": "again"})) == (
        403, "rateLimitExceeded", "Rate Limit Exceeded")
    service.events().get(calendarId=ROOM, eventId="paced00001").execute()  # reads pass
    service.events().insert(calendarId=OTHER_ROOM, body=timed_event()).execute()  # other rooms
    emulator.state.advance_clock(5)
    service.events().patch(calendarId=ROOM, eventId="paced00001",
                           body={"summary": "later"}).execute()
    assert [e["refused_by_quota"] for e in emulator.state.requests(method="PATCH")] == [
        "calendar_writes", None]


def test_settings_reject_a_status_google_does_not_use(emulator):
    answer = requests.post(emulator.url + "/_emulator/settings", json={"quota_user_status": 500},
                           timeout=5)
    assert answer.status_code == 400


def test_python_m_emulator_turns_quotas_on_from_the_environment():
    env = dict(os.environ, EMULATOR_QUOTAS="1")
    with subprocess.Popen(
            [sys.executable, "-m", "emulator", "--port", "0", "--quota-per-user", "7"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as process:
        try:
            banner = process.stdout.readline()
            url = banner.split(" on ", 1)[1].split(" ", 1)[0]
            settings = requests.get(url + "/_emulator/settings", timeout=5).json()
        finally:
            process.terminate()

    assert "quotas 7/min per user" in banner
    assert (settings["quota_enabled"], settings["quota_per_user"]) == (True, 7)

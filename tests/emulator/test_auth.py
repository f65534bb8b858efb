"""Service-account tokens, their expiry, scopes and delegation, through real clients."""

import pytest
import requests
from google.auth.exceptions import RefreshError

from .support import ACCOUNT, ROOM, calendar_service, error_of, timed_event


def test_the_real_client_builds_from_static_discovery_and_gets_a_token(emulator, service):
    result = service.events().list(calendarId=ROOM).execute()

    assert result["kind"] == "calendar#events"
    calls = emulator.state.requests()
    assert [c["path"] for c in calls] == ["/token", f"/calendar/v3/calendars/{ROOM}/events"]
    assert calls[0]["principal"] == ACCOUNT
    assert calls[1]["service_account"] == ACCOUNT and calls[1]["subject"] is None


def test_the_key_names_the_emulator_token_endpoint(emulator, key):
    assert key["type"] == "service_account"
    assert key["client_email"] == ACCOUNT
    assert key["token_uri"] == emulator.url + "/token"
    assert key["private_key"].startswith("-----BEGIN PRIVATE KEY-----")


def test_a_call_without_a_token_gets_googles_401(emulator, key):
    response = requests.get(f"{emulator.calendar_api_url}calendars/{ROOM}/events", timeout=5)

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED"
    assert error["errors"][0]["reason"] == "authError"
    assert error["message"] == "Invalid Credentials"


def test_an_expired_token_is_refused_and_the_client_refreshes(emulator, service):
    service.events().list(calendarId=ROOM).execute()
    emulator.state.advance_clock(3601)

    service.events().list(calendarId=ROOM).execute()

    statuses = [(c["path"], c["status"]) for c in emulator.state.requests()]
    events_path = f"/calendar/v3/calendars/{ROOM}/events"
    assert statuses == [("/token", 200), (events_path, 200), (events_path, 401),
                        ("/token", 200), (events_path, 200)]


def test_token_lifetime_is_configurable(emulator, key):
    emulator.state.update_settings(access_token_ttl=5)
    form = _grant(emulator, key)

    assert form["expires_in"] == 5 and form["token_type"] == "Bearer"


def test_a_token_without_a_calendar_scope_gets_403(emulator, key):
    service = calendar_service(emulator, key, scopes=["https://www.googleapis.com/auth/drive"])

    with pytest.raises(Exception) as excinfo:
        service.events().list(calendarId=ROOM).execute()

    assert error_of(excinfo)[:2] == (403, "insufficientPermissions")


def test_a_forged_assertion_is_refused(emulator, key):
    other = emulator.create_service_account("intruder@demo-project.iam.gserviceaccount.com")
    forged = dict(other, client_email=ACCOUNT, private_key_id=key["private_key_id"])
    service = calendar_service(emulator, forged)

    with pytest.raises(RefreshError) as excinfo:
        service.events().list(calendarId=ROOM).execute()

    assert "invalid_grant" in str(excinfo.value)


def test_delegation_is_refused_until_enabled(emulator, key):
    emulator.state.add_user("alice@example.com", "Alice")
    delegated = calendar_service(emulator, key, subject="alice@example.com")

    with pytest.raises(RefreshError) as excinfo:
        delegated.events().list(calendarId="alice@example.com").execute()
    assert "unauthorized_client" in str(excinfo.value)

    emulator.state.set_delegation(ACCOUNT, True)
    event = delegated.events().insert(
        calendarId="alice@example.com",
        body=timed_event(attendees=[{"email": "bob@example.com"}])).execute()

    assert event["organizer"] == {"email": "alice@example.com", "displayName": "Alice",
                                  "self": True}
    assert event["creator"]["email"] == "alice@example.com"
    assert emulator.state.requests(method="POST")[-1]["subject"] == "alice@example.com"


def test_a_delegated_user_reaches_only_calendars_shared_with_them(emulator, key):
    emulator.state.add_user("alice@example.com", "Alice")
    emulator.state.set_delegation(ACCOUNT, True)
    delegated = calendar_service(emulator, key, subject="alice@example.com")

    with pytest.raises(Exception) as excinfo:
        delegated.events().list(calendarId=ROOM).execute()
    assert error_of(excinfo)[:2] == (404, "notFound")

    emulator.state.share(ROOM, "alice@example.com", "reader")
    assert delegated.events().list(calendarId=ROOM).execute()["accessRole"] == "reader"


def _grant(emulator, key):
    """Run google-auth's own grant and return the token endpoint's raw answer."""
    from google.auth.transport.requests import Request
    from google.oauth2 import _client
    from google.oauth2 import service_account as sa

    credentials = sa.Credentials.from_service_account_info(
        key, scopes=["https://www.googleapis.com/auth/calendar.events"])
    assertion = credentials._make_authorization_grant_assertion()
    return _client._token_endpoint_request(Request(), key["token_uri"], {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})

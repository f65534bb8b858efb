"""events.watch channels: what a receiver gets, retries, stop and expiry."""

import time
from datetime import datetime

import pytest

from .support import ROOM, error_of, timed_event

PUSH_HEADERS = {"X-Goog-Channel-Id", "X-Goog-Channel-Token", "X-Goog-Channel-Expiration",
                "X-Goog-Resource-Id", "X-Goog-Resource-Uri", "X-Goog-Resource-State",
                "X-Goog-Message-Number"}


def _watch(service, address, channel_id="channel-1", **extra):
    body = {"id": channel_id, "type": "web_hook", "address": address, **extra}
    return service.events().watch(calendarId=ROOM, body=body).execute()


def _settle(emulator, seconds=0.3):
    """Wait until queued deliveries are done (nothing left in the dispatcher)."""
    deadline = time.monotonic() + seconds
    while emulator.state.dispatcher.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def test_a_channel_sends_sync_then_exists_with_googles_headers(service, receiver):
    hook = receiver()
    channel = _watch(service, hook.url, token="secret-token", params={"ttl": "3600"})

    service.events().insert(calendarId=ROOM, body=timed_event()).execute()
    sync, exists = hook.wait_for(2)

    assert channel["kind"] == "api#channel" and channel["id"] == "channel-1"
    assert channel["token"] == "secret-token"
    for push in (sync, exists):
        assert push["method"] == "POST" and push["body"] == b""
        goog = {k: v for k, v in push["headers"].items() if k.lower().startswith("x-goog-")}
        assert set(goog) == PUSH_HEADERS
        assert goog["X-Goog-Channel-Id"] == "channel-1"
        assert goog["X-Goog-Channel-Token"] == "secret-token"
        assert goog["X-Goog-Resource-Id"] == channel["resourceId"]
        assert goog["X-Goog-Resource-Uri"] == channel["resourceUri"]
        expiration = datetime.strptime(goog["X-Goog-Channel-Expiration"],
                                       "%a, %d %b %Y %H:%M:%S GMT")
        assert abs(expiration.timestamp() - int(channel["expiration"]) / 1000) < 1
    assert [sync["headers"]["X-Goog-Resource-State"],
            exists["headers"]["X-Goog-Resource-State"]] == ["sync", "exists"]
    first, second = (int(p["headers"]["X-Goog-Message-Number"]) for p in (sync, exists))
    assert second > first + 1


def test_no_token_header_without_a_token_and_resource_id_is_stable(service, receiver):
    hook = receiver()
    first = _watch(service, hook.url, "channel-a")
    second = _watch(service, hook.url, "channel-b")

    pushes = hook.wait_for(2)

    assert first["resourceId"] == second["resourceId"]
    assert all("X-Goog-Channel-Token" not in p["headers"] for p in pushes)


def test_ttl_defaults_to_a_week_and_is_capped(emulator, service, receiver):
    hook = receiver()
    now_ms = time.time() * 1000
    week = _watch(service, hook.url, "channel-week")
    emulator.state.update_settings(max_channel_ttl=60)
    capped = _watch(service, hook.url, "channel-capped", params={"ttl": "3600"})

    assert abs(int(week["expiration"]) - now_ms - 604800_000) < 5000
    assert abs(int(capped["expiration"]) - now_ms - 60_000) < 5000


def test_a_duplicate_channel_id_is_refused(service, receiver):
    hook = receiver()
    _watch(service, hook.url)

    with pytest.raises(Exception) as excinfo:
        _watch(service, hook.url)

    assert error_of(excinfo)[:2] == (400, "channelIdNotUnique")


def test_plain_http_is_allowed_on_loopback_only(service):
    with pytest.raises(Exception) as excinfo:
        _watch(service, "http://example.com/hook")

    assert error_of(excinfo)[:2] == (400, "push.webhookUrlNotHttps")


def test_503_is_retried_with_backoff_until_it_succeeds(emulator, service, receiver):
    hook = receiver(statuses=[503, 503, 204])
    channel = _watch(service, hook.url)

    pushes = hook.wait_for(3)
    _settle(emulator)

    assert [p["headers"]["X-Goog-Resource-State"] for p in pushes] == ["sync"] * 3
    log = emulator.state.pushes(channel["id"])
    assert [(e["attempt"], e["status"], e["outcome"]) for e in log] == [
        (1, 503, "retrying"), (2, 503, "retrying"), (3, 204, "delivered")]


def test_other_failures_are_not_retried(emulator, service, receiver):
    hook = receiver(statuses=[404])
    _watch(service, hook.url)

    hook.wait_for(1)
    _settle(emulator)

    assert [(e["status"], e["outcome"]) for e in emulator.state.pushes()] == [(404, "failed")]


def test_a_stopped_channel_stops_delivering(emulator, service, receiver):
    hook = receiver()
    channel = _watch(service, hook.url)
    hook.wait_for(1)

    service.channels().stop(body={"id": channel["id"],
                                  "resourceId": channel["resourceId"]}).execute()
    service.events().insert(calendarId=ROOM, body=timed_event()).execute()
    _settle(emulator)

    assert hook.states() == ["sync"]
    with pytest.raises(Exception) as excinfo:
        service.channels().stop(body={"id": channel["id"], "resourceId": "wrong"}).execute()
    assert error_of(excinfo)[:2] == (404, "notFound")


def test_a_stopped_channel_may_deliver_once_when_asked(emulator, service, receiver):
    emulator.state.update_settings(stopped_channel_delivers_once=True)
    hook = receiver()
    channel = _watch(service, hook.url)
    hook.wait_for(1)
    service.channels().stop(body={"id": channel["id"],
                                  "resourceId": channel["resourceId"]}).execute()

    for _ in range(2):
        service.events().insert(calendarId=ROOM, body=timed_event()).execute()
    _settle(emulator)

    assert hook.states() == ["sync", "exists"]


def test_channels_expire_on_the_emulated_clock(emulator, service, receiver):
    hook = receiver()
    _watch(service, hook.url, params={"ttl": "600"})
    hook.wait_for(1)

    emulator.state.advance_clock(601)
    service.events().insert(calendarId=ROOM, body=timed_event()).execute()
    _settle(emulator)

    assert hook.states() == ["sync"]


def test_control_api_changes_push_too(emulator, service, receiver):
    hook = receiver()
    _watch(service, hook.url)
    event = service.events().insert(calendarId=ROOM, body=timed_event()).execute()
    hook.wait_for(2)

    emulator.state.admin_patch_event(ROOM, event["id"], {"start": "2030-01-07T10:30:00Z"})
    emulator.state.admin_delete_event(ROOM, event["id"])

    hook.wait_for(4)
    assert hook.states() == ["sync", "exists", "exists", "exists"]


def test_dropped_pushes_are_logged_not_sent(emulator, service, receiver):
    emulator.state.update_settings(push_drop_ratio=1.0)
    hook = receiver()
    _watch(service, hook.url)
    hook.wait_for(1)

    service.events().insert(calendarId=ROOM, body=timed_event()).execute()
    _settle(emulator)

    assert hook.states() == ["sync"]
    # A delivery is logged once its answer is back, a drop at once: the log's order may differ.
    assert sorted((e["state"], e["outcome"]) for e in emulator.state.pushes()) == [
        ("exists", "dropped"), ("sync", "delivered")]

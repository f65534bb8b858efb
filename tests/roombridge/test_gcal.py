"""The gateway against the emulator, through the real google-api-python-client over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from roombridge import db
from roombridge.gcal import (
    CalendarGateway,
    CalendarNotInScope,
    EventIdTaken,
    PermanentGoogleError,
    RetriableGoogleError,
    SyncTokenInvalid,
    event_id_for,
    own_properties,
    reservation_id_of,
)
from tests.factories import make_room
from tests.support import SERVICE_ACCOUNT, TEST_SETTINGS

ROOM = "atlas@resource.calendar.google.com"
OTHER_ROOM = "borealis@resource.calendar.google.com"
T0 = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)


def event_body(reservation_id: int, start: datetime = T0, **extra) -> dict:
    return {
        "summary": f"Reservation {reservation_id}",
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + timedelta(hours=1)).isoformat()},
        "extendedProperties": {"private": own_properties(reservation_id, TEST_SETTINGS["SECRET_KEY"])},
        **extra,
    }


@pytest.fixture
def rooms(emulator, google_app):
    """Two room calendars shared with the service account; only ATLAS is in scope in the app."""
    for calendar_id, name in ((ROOM, "Atlas"), (OTHER_ROOM, "Borealis")):
        emulator.state.add_calendar(calendar_id, name, kind="room")
        emulator.state.share(calendar_id, SERVICE_ACCOUNT, "writer")
    with google_app.app_context():
        make_room(db.session(), calendar_id=ROOM, name="Atlas")
        make_room(db.session(), calendar_id=OTHER_ROOM, name="Borealis", in_scope=False)
        db.session().commit()
    return google_app


@pytest.fixture
def gw(rooms):
    with rooms.app_context():
        gateway = CalendarGateway.for_app(kind="write")
        gateway.retry_base = 0.01  # keep the backoff real but short
        yield gateway


def calendar_calls(emulator, calendar_id=None):
    return [r for r in emulator.state.requests(calendar=calendar_id) if r["path"].startswith("/calendar/v3/")]


def test_token_flow_then_calls_reuse_the_token(emulator, gw, rooms):
    gw.insert_event(ROOM, event_id_for(1), event_body(1))
    with rooms.app_context():
        CalendarGateway.for_app(kind="write").get_event(ROOM, event_id_for(1))
    token_calls = [r for r in emulator.state.requests() if r["path"] == "/token"]
    assert len(token_calls) == 1 and token_calls[0]["status"] == 200
    assert [r["status"] for r in calendar_calls(emulator, ROOM)] == [200, 200]


def test_calendars_out_of_scope_are_refused_before_any_request(emulator, gw):
    emulator.state.clear_requests()
    for calendar_id in (OTHER_ROOM, "alice@example.com", "nowhere@resource.calendar.google.com"):
        with pytest.raises(CalendarNotInScope):
            gw.insert_event(calendar_id, event_id_for(1), event_body(1))
        with pytest.raises(CalendarNotInScope):
            gw.list_events(calendar_id)
        with pytest.raises(CalendarNotInScope):
            gw.watch(calendar_id, channel_id="c1", address="http://127.0.0.1:1/", token="t")
    assert emulator.state.requests() == []


def test_deterministic_ids_are_valid_base32hex_and_differ_by_revision():
    ids = {event_id_for(r, rev) for r in (1, 2, 12345) for rev in (0, 1)}
    assert len(ids) == 6
    for event_id in ids:
        assert 5 <= len(event_id) <= 1024 and set(event_id) <= set("0123456789abcdefghijklmnopqrstuv")


def test_a_retried_insert_creates_one_event(emulator, gw):
    first = gw.insert_event(ROOM, event_id_for(7), event_body(7))
    again = gw.insert_event(ROOM, event_id_for(7), event_body(7))  # as after a lost response
    assert again["id"] == first["id"] and again["etag"] == first["etag"]
    assert reservation_id_of(again, TEST_SETTINGS["SECRET_KEY"]) == 7
    inserts = [r for r in calendar_calls(emulator, ROOM) if r["method"] == "POST"]
    assert [r["status"] for r in inserts] == [200, 409]
    assert len([e for page in gw.list_events(ROOM).pages() for e in page]) == 1


def test_a_deleted_id_is_never_reused(gw):
    gw.insert_event(ROOM, event_id_for(8), event_body(8))
    assert gw.delete_event(ROOM, event_id_for(8)) is True
    assert gw.delete_event(ROOM, event_id_for(8)) is False  # already gone is as good as gone
    with pytest.raises(EventIdTaken):
        gw.insert_event(ROOM, event_id_for(8), event_body(8))
    assert gw.insert_event(ROOM, event_id_for(8, 1), event_body(8))["id"] == event_id_for(8, 1)


@pytest.mark.parametrize(
    "status, reason",
    [(503, None), (500, None), (429, None), (403, "rateLimitExceeded"), (403, "userRateLimitExceeded")],
)
def test_recoverable_errors_are_retried(emulator, gw, status, reason):
    emulator.state.add_fault(status, times=2, method="POST", reason=reason, calendar=ROOM)
    created = gw.insert_event(ROOM, event_id_for(9), event_body(9))
    assert created["id"] == event_id_for(9)
    assert [r["status"] for r in calendar_calls(emulator, ROOM)] == [status, status, 200]


def test_retries_give_up_with_a_retriable_error(emulator, gw):
    emulator.state.add_fault(503, times=10, calendar=ROOM)
    with pytest.raises(RetriableGoogleError) as caught:
        gw.get_event(ROOM, event_id_for(1))
    assert caught.value.status == 503
    assert len(calendar_calls(emulator, ROOM)) == gw.max_attempts


def test_quota_exceeded_fails_fast_with_its_reason(emulator, gw):
    emulator.state.add_fault(403, times=5, reason="quotaExceeded", calendar=ROOM)
    with pytest.raises(PermanentGoogleError) as caught:
        gw.insert_event(ROOM, event_id_for(10), event_body(10))
    assert not caught.value.retriable and caught.value.reason == "quotaExceeded"
    assert len(calendar_calls(emulator, ROOM)) == 1


def test_room_mode_cannot_invite_attendees(gw):
    body = event_body(11, attendees=[{"email": "alice@example.com"}])
    with pytest.raises(PermanentGoogleError) as caught:
        gw.insert_event(ROOM, event_id_for(11), body)
    assert caught.value.status == 403 and caught.value.reason == "forbiddenForServiceAccounts"


def test_delegated_mode_acts_as_the_booking_user_and_may_invite(emulator, make_app, tmp_path):
    import json

    key = emulator.create_service_account("delegated@demo-project.iam.gserviceaccount.com", delegation=True)
    (tmp_path / "key.json").write_text(json.dumps(key))
    emulator.state.add_user("booking@example.com", "Booking")
    emulator.state.add_calendar(ROOM, "Atlas", kind="room")
    emulator.state.share(ROOM, "booking@example.com", "writer")
    app = make_app(
        GOOGLE_SERVICE_ACCOUNT_FILE=str(tmp_path / "key.json"),
        GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
        GOOGLE_DELEGATED_USER="booking@example.com",
    )
    with app.app_context():
        make_room(db.session(), calendar_id=ROOM)
        db.session().commit()
        gw = CalendarGateway.for_app(kind="write")
        assert gw.delegated
        body = event_body(12, attendees=[{"email": "alice@example.com"}])
        created = gw.insert_event(ROOM, event_id_for(12), body, send_updates="all")
    assert [a["email"] for a in created["attendees"]] == ["alice@example.com"]
    insert = [r for r in calendar_calls(emulator, ROOM) if r["method"] == "POST"][0]
    assert insert["send_updates"] == "all"


def test_listing_pages_to_the_end_and_then_syncs_incrementally(emulator, gw):
    for n in range(1, 8):
        gw.insert_event(ROOM, event_id_for(n), event_body(n, start=T0 + timedelta(days=n)))
    emulator.state.update_settings(page_size_cap=2)  # Google may return short pages
    listing = gw.list_events(ROOM, time_min=T0 - timedelta(days=1), time_max=T0 + timedelta(days=30), page_size=3)
    seen = []
    for page in listing.pages():
        assert listing.next_sync_token is None  # only the last page carries it
        seen.extend(e["id"] for e in page)
    assert sorted(seen) == sorted(event_id_for(n) for n in range(1, 8))
    assert listing.page_count >= 4 and listing.next_sync_token

    gw.patch_event(ROOM, event_id_for(2), {"summary": "moved"})
    gw.delete_event(ROOM, event_id_for(3))
    changes = gw.list_events(ROOM, sync_token=listing.next_sync_token)
    changed = {e["id"]: e for page in changes.pages() for e in page}
    assert set(changed) == {event_id_for(2), event_id_for(3)}
    assert changed[event_id_for(2)]["summary"] == "moved"
    assert changed[event_id_for(3)]["status"] == "cancelled"
    assert changes.next_sync_token and changes.next_sync_token != listing.next_sync_token


def test_an_expired_sync_token_asks_for_a_full_sync(emulator, gw):
    listing = gw.list_events(ROOM)
    list(listing.pages())
    emulator.state.expire_sync_tokens(ROOM)
    with pytest.raises(SyncTokenInvalid):
        list(gw.list_events(ROOM, sync_token=listing.next_sync_token).pages())


def test_watch_and_stop_a_channel(emulator, gw):
    result = gw.watch(ROOM, channel_id="channel-1", address="http://127.0.0.1:9/hook", token="secret", ttl_seconds=600)
    assert result.id == "channel-1" and result.resource_id
    assert timedelta(seconds=590) < result.expiration - datetime.now(UTC) <= timedelta(seconds=601)
    assert gw.stop_channel("channel-1", result.resource_id) is True
    assert [c["stopped"] for c in emulator.state.channels_info()] == [True]
    assert gw.stop_channel("never-made", result.resource_id) is False  # Google no longer knows it


def test_access_check_says_what_is_missing(emulator, gw):
    emulator.state.add_calendar("new@resource.calendar.google.com", "New", kind="room")
    check = gw.check_access("new@resource.calendar.google.com")
    assert not check.ok and SERVICE_ACCOUNT in check.problem and "not shared" in check.problem
    emulator.state.share("new@resource.calendar.google.com", SERVICE_ACCOUNT, "reader")
    check = gw.check_access("new@resource.calendar.google.com")
    assert not check.ok and check.role == "reader" and "Make changes to events" in check.problem
    emulator.state.share("new@resource.calendar.google.com", SERVICE_ACCOUNT, "writer")
    assert gw.check_access("new@resource.calendar.google.com").ok
    emulator.state.clear_requests()
    assert not gw.check_access("alice@example.com").ok  # a person's calendar is never touched
    assert emulator.state.requests() == []

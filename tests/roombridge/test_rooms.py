"""Rooms in and out of scope, checked against the emulator over HTTP."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from roombridge import channels, db, rooms
from roombridge.gcal import CalendarGateway, CalendarNotInScope
from roombridge.models import AuditEntry, Room, WatchChannel
from roombridge.queue import queue
from tests.factories import make_room
from tests.support import SERVICE_ACCOUNT, shared_room

ATLAS = "atlas@resource.calendar.google.com"
BOREALIS = "borealis@resource.calendar.google.com"


@pytest.fixture
def ctx(make_google_app, emulator):
    shared_room(emulator, ATLAS, "Atlas")
    shared_room(emulator, BOREALIS, "Borealis", role=None)  # exists, shared with nobody
    app = make_google_app(GOOGLE_MAX_ATTEMPTS=1, WEBHOOK_BASE_URL="http://127.0.0.1:9")
    with app.app_context():
        yield db.session(), CalendarGateway.for_app(kind="write"), app.config["ROOMBRIDGE"], emulator.state.clock.now()


def watch_calls(emulator):
    return [r for r in emulator.state.requests(method="POST") if r["path"].endswith("/events/watch")]


def test_adding_a_room_checks_access_opens_its_channel_and_requests_a_full_sync(emulator, ctx):
    session, gw, config, now = ctx
    added = rooms.add_room(session, gw, config, " Atlas@Resource.Calendar.Google.com ", name="Atlas",
                           capacity=10, features="projector, whiteboard,projector", time_zone="Europe/Paris",
                           now=now, actor="admin@example.com")
    room = session.scalar(sa.select(Room).where(Room.calendar_id == ATLAS))
    assert room.id == added.room.id and room.in_scope and room.access_role == "writer"
    assert room.features == ["projector", "whiteboard"] and room.capacity == 10
    assert added.channel is not None and added.channel_problem is None
    google = {c["id"]: c for c in emulator.state.channels_info()}
    assert google[added.channel.id]["calendar"] == ATLAS and not google[added.channel.id]["stopped"]
    # The first full sync, requested after the channel exists, paced with the safety net's sweeps.
    [first_sync] = queue("sweep").jobs
    assert first_sync.args == (room.id,) and first_sync.kwargs == {"full": True} and queue("sync").count == 0
    assert session.scalar(sa.select(AuditEntry.actor).where(AuditEntry.action == "room.added")) == "admin@example.com"


def test_a_bulk_add_leaves_the_channel_to_the_renewal_pass_and_paces_the_first_sync(emulator, ctx):
    session, gw, config, now = ctx
    added = rooms.add_room(session, gw, config, ATLAS, name="Atlas", now=now, paced=True)
    assert added.channel is None and watch_calls(emulator) == []
    assert [j.args for j in queue("sweep").jobs] == [(added.room.id,)] and queue("sync").count == 0
    report = channels.renew_due(session, CalendarGateway.for_app(kind="renewal"), config, now)
    assert len(report.created) == 1 and len(watch_calls(emulator)) == 1


def test_a_room_not_shared_with_the_service_account_is_refused_with_a_clear_message(emulator, ctx):
    session, gw, config, now = ctx
    with pytest.raises(rooms.RoomRefused) as refused:
        rooms.add_room(session, gw, config, BOREALIS, name="Borealis", now=now)
    assert f"not shared with {SERVICE_ACCOUNT}" in str(refused.value)
    assert session.scalar(sa.select(sa.func.count()).select_from(Room)) == 0
    assert watch_calls(emulator) == [] and queue("sweep").count == 0


def test_read_only_sharing_is_refused_naming_the_permission_needed(emulator, ctx):
    session, gw, config, now = ctx
    emulator.state.share(BOREALIS, SERVICE_ACCOUNT, "reader")
    with pytest.raises(rooms.RoomRefused) as refused:
        rooms.add_room(session, gw, config, BOREALIS, name="Borealis", now=now)
    assert "'reader'" in str(refused.value) and "Make changes to events" in str(refused.value)
    assert session.scalar(sa.select(sa.func.count()).select_from(Room)) == 0


@pytest.mark.parametrize(("address", "fields", "message"), [
    ("alice@example.com", {}, "not a room calendar address"),
    (ATLAS, {"name": " "}, "needs a name"),
    (ATLAS, {"time_zone": "Mars/Olympus"}, "Unknown time zone"),
    (ATLAS, {"capacity": 0}, "too small"),
])
def test_bad_input_is_refused_before_google_is_asked(emulator, ctx, address, fields, message):
    session, gw, config, now = ctx
    emulator.state.clear_requests()
    with pytest.raises(rooms.RoomRefused, match=message):
        rooms.add_room(session, gw, config, address, now=now, **{"name": "Atlas", **fields})
    assert [r for r in emulator.state.requests() if r["path"].startswith("/calendar/")] == []


def test_a_room_already_in_scope_is_not_added_twice(ctx):
    session, gw, config, now = ctx
    rooms.add_room(session, gw, config, ATLAS, name="Atlas", now=now)
    with pytest.raises(rooms.RoomRefused, match="already in scope"):
        rooms.add_room(session, gw, config, ATLAS, name="Atlas again", now=now)


def test_removing_a_room_stops_its_channel_and_takes_it_off_the_allowlist(emulator, ctx):
    session, gw, config, now = ctx
    added = rooms.add_room(session, gw, config, ATLAS, name="Atlas", now=now)
    pending = rooms.remove_room(session, gw, added.room, now, actor="admin@example.com")
    assert pending == []
    assert {c["id"]: c["stopped"] for c in emulator.state.channels_info()} == {added.channel.id: True}
    assert any(r["path"] == "/calendar/v3/channels/stop" and r["status"] == 204 for r in emulator.state.requests())
    assert not added.room.in_scope
    assert session.get(WatchChannel, added.channel.id).stopped_at is not None
    with pytest.raises(CalendarNotInScope):
        gw.list_events(ATLAS)
    # Nothing is left watching it: the renewal pass does not open a channel for it again.
    assert channels.renew_due(session, gw, config, now).as_dict() == {}
    # Back in scope later: a new channel, not the stopped one.
    again = rooms.add_room(session, gw, config, ATLAS, name="Atlas", now=now)
    assert again.room.id == added.room.id and again.channel.id != added.channel.id


def test_a_failed_stop_on_removal_is_kept_for_retry(emulator, ctx):
    session, gw, config, now = ctx
    added = rooms.add_room(session, gw, config, ATLAS, name="Atlas", now=now)
    emulator.state.add_fault(500, times=1, method="POST", path_regex="channels/stop")
    pending = rooms.remove_room(session, gw, added.room, now)
    assert [c.id for c in pending] == [added.channel.id] and pending[0].stop_pending
    assert not added.room.in_scope
    report = channels.renew_due(session, gw, config, now)
    assert report.stopped == [added.channel.id]
    assert emulator.state.channels_info()[0]["stopped"] is True


def test_editing_a_room_validates_and_audits(ctx):
    session, _gw, _config, _now = ctx
    room = make_room(session, calendar_id=ATLAS, name="Atlas")
    session.commit()
    rooms.edit_room(session, room, "admin@example.com", name="Atlas (big)", capacity="12", features="tv",
                    bookable_hours="08:00-18:00")
    assert (room.name, room.capacity, room.features, room.bookable_hours) == ("Atlas (big)", 12, ["tv"], "08:00-18:00")
    with pytest.raises(rooms.RoomRefused, match="08:00-18:00"):
        rooms.edit_room(session, room, bookable_hours="8 to 6")
    with pytest.raises(rooms.RoomRefused, match="cannot change calendar_id"):
        rooms.edit_room(session, room, calendar_id=BOREALIS)
    entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "room.edited"))
    assert entry.details["changes"]["capacity"] == [8, 12]


def test_access_check_says_what_is_missing_per_room(emulator, ctx):
    session, gw, _config, _now = ctx
    atlas = make_room(session, calendar_id=ATLAS, name="Atlas")
    borealis = make_room(session, calendar_id=BOREALIS, name="Borealis")
    session.commit()
    reports = {r.room.calendar_id: r for r in rooms.check_rooms_access(session, gw, [atlas, borealis])}
    assert reports[ATLAS].problem is None and reports[ATLAS].role == "writer"
    assert "not shared" in reports[BOREALIS].problem
    assert borealis.health_error.startswith(rooms.ACCESS_PROBLEM_PREFIX) and atlas.health_error is None
    emulator.state.share(BOREALIS, SERVICE_ACCOUNT, "owner")
    rooms.check_rooms_access(session, gw, [borealis])
    assert borealis.health_error is None and borealis.access_role == "owner"

"""The console's renewal job against the emulator."""

from __future__ import annotations

import pytest

from jobs.console import renew_room_channel
from roombridge import db, rooms
from roombridge.db import utcnow
from roombridge.gcal import CalendarGateway
from roombridge.models import Room
from tests.conftest import SERVICE_ACCOUNT, shared_room

ATLAS = "atlas@resource.calendar.google.com"


@pytest.fixture
def atlas(make_google_app, emulator):
    shared_room(emulator, ATLAS, "Atlas")
    app = make_google_app(GOOGLE_MAX_ATTEMPTS=1, WEBHOOK_BASE_URL="http://127.0.0.1:9")
    with app.app_context():
        added = rooms.add_room(db.session(), CalendarGateway.for_app(), app.config["ROOMBRIDGE"], ATLAS,
                               name="Atlas", now=utcnow())
        yield added.room.id, added.channel.id


def test_renewal_replaces_the_channel_and_stops_the_old_one(atlas, emulator):
    room_id, first = atlas
    second = renew_room_channel(room_id, "admin@example.com")
    google = {c["id"]: c["stopped"] for c in emulator.state.channels_info()}
    assert google == {first: True, second: False}


def test_renewal_of_an_unshared_room_keeps_googles_reason_on_the_room(atlas, emulator):
    room_id, first = atlas
    emulator.state.unshare(ATLAS, SERVICE_ACCOUNT)
    assert renew_room_channel(room_id) is None
    db.session().expire_all()  # the job ran in its own app context and session
    room = db.session().get(Room, room_id)
    assert room.health_error.startswith("Google refused a push channel")
    assert [c["id"] for c in emulator.state.channels_info() if not c["stopped"]] == [first]


def test_renewal_of_a_room_out_of_scope_does_nothing(atlas, emulator):
    room_id, _ = atlas
    db.session().get(Room, room_id).in_scope = False
    db.session().commit()
    calls = len(emulator.state.requests())
    assert renew_room_channel(room_id) is None
    assert len(emulator.state.requests()) == calls

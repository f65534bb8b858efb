"""Issue #19 at each boundary people and scripts use: a NUL character or a lone surrogate is refused
with the boundary's documented answer, never a 500 (PostgreSQL cannot store either), and nothing
is stored. The webhook's headers: tests/webhooks/test_google_calendar.py; what Google sends:
tests/roombridge/test_mirror.py and test_sync.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from roombridge import api_tokens, db
from roombridge.db import utcnow
from roombridge.models import AuditEntry, Reservation, Room
from roombridge.text import MESSAGE
from tests.factories import make_room
from tests.webapp.signin import csrf_token, sign_in

BAD = ["Board\x00meeting", "Board \ud800meeting"]


def _count(app, model) -> int:
    with app.app_context():
        return db.session().scalar(sa.select(sa.func.count()).select_from(model))


@pytest.fixture
def api(app):
    with app.app_context():
        session = db.session()
        room_id = make_room(session, name="Orion").id
        session.commit()
        token = api_tokens.create(session, "alice@example.com").token
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client, room_id


def _slot() -> tuple[str, str]:
    start = (utcnow() + timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
    return start.isoformat(), (start + timedelta(hours=1)).isoformat()


@pytest.mark.parametrize("bad", BAD, ids=["nul", "surrogate"])
@pytest.mark.parametrize("field", ["title", "description", "attendees"])
def test_api_field_is_refused_with_422_naming_it(app, api, field, bad):
    client, room_id = api
    start, end = _slot()
    value = [f"{bad}@example.com"] if field == "attendees" else bad
    body = {"room_id": room_id, "title": "Planning", "start": start, "end": end, field: value}
    audited = _count(app, AuditEntry)
    answer = client.post("/api/v1/reservations", json=body)
    assert answer.status_code == 422 and answer.json == {"error": "invalid", "errors": {field: [MESSAGE]}}
    assert _count(app, Reservation) == 0 and _count(app, AuditEntry) == audited


@pytest.mark.parametrize("query", [{"start": "2030-01-07T10:00:00Z\x00"}, {"room": "\x001"}, {"x\x00": "1"}],
                         ids=["start", "room", "unknown-name"])
def test_api_query_parameter_is_refused_with_422_naming_it(app, api, query):
    client, _room_id = api
    answer = client.get("/api/v1/reservations", query_string=query)
    [name] = query
    assert answer.status_code == 422 and answer.json == {"error": "invalid",
                                                         "errors": {name.replace("\x00", ""): [MESSAGE]}}


@pytest.mark.parametrize("field", ["title", "description", "attendees"])
def test_booking_form_field_is_refused_naming_it_and_nothing_is_stored(app, field):
    with app.app_context():
        session = db.session()
        room_id = make_room(session, name="Orion").id
        session.commit()
    client = app.test_client()
    sign_in(client, "alice@example.com")
    day = (utcnow() + timedelta(days=3)).date().isoformat()
    form = {"room_id": str(room_id), "title": "Planning", "date": day, "start": "10:00", "end": "11:00",
            "attendees": "", "description": "", "repeat": "none", "csrf_token": csrf_token(client, "/book")}
    form[field] = "bob\x00@example.com" if field == "attendees" else "Board\x00meeting"
    answer = client.post("/book", data=form)
    assert answer.status_code == 422 and f"“{field}”" in answer.get_data(as_text=True)
    assert _count(app, Reservation) == 0 and _count(app, AuditEntry) == 0


@pytest.mark.parametrize("query", [{"building": "HQ\x00"}, {"features": ["projector", "\x00"]}, {"date": "\x00"}])
def test_room_finder_query_is_refused_naming_the_field(app, query):
    client = app.test_client()
    sign_in(client, "alice@example.com")
    answer = client.get("/", query_string=query)
    [name] = query
    assert answer.status_code == 422 and f"“{name}”" in answer.get_data(as_text=True)


def test_admin_room_form_field_is_refused_and_the_room_unchanged(app):
    with app.app_context():
        session = db.session()
        room_id = make_room(session, name="Vega").id
        session.commit()
    client = app.test_client()
    sign_in(client, "admin@example.com")
    answer = client.post(f"/admin/rooms/{room_id}", data={"name": "Ve\x00ga", "time_zone": "UTC",
                                                          "csrf_token": csrf_token(client, "/admin/")})
    assert answer.status_code == 422 and "“name”" in answer.get_data(as_text=True)
    with app.app_context():
        assert db.session().get(Room, room_id).name == "Vega"


@pytest.mark.parametrize("args", [["tokens", "create", "alice\x00@example.com"],
                                  ["tokens", "create", "alice\udcff@example.com"],  # undecodable argv byte 0xff
                                  ["sync", "atlas\x00@resource.calendar.google.com"]],
                         ids=["nul", "surrogate", "sync-room"])
def test_cli_argument_is_refused_with_a_usage_error(app, runner, args):
    result = runner.invoke(args=args)
    assert result.exit_code == 2 and "must not contain NUL characters" in result.output, result.output
    assert _count(app, AuditEntry) == 0


def test_a_nul_in_the_query_of_an_api_path_that_matches_no_route_still_answers_json(client):
    # schemathesis found it: /api/v1/rooms/-4284/availability?x=%00 had no blueprint and got the HTML page.
    answer = client.get("/api/v1/rooms/-4284/availability?x=a%00b")
    assert answer.status_code in (404, 422) and answer.is_json

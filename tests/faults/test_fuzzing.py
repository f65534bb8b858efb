"""Hypothesis over the webhook's headers and every HTML form: never a 500, nothing stored when refused.

The JSON API's bodies (create and edit) are fuzzed in tests/webapp/test_api.py
(test_fuzzed_bodies_never_500_and_store_nothing, test_fuzzed_edits_never_500_...).
Each example here compares a snapshot of what the request could have changed, taken
before and after: a refused request must leave it exactly as it was.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from roombridge import db, notifications
from roombridge.db import utcnow
from roombridge.models import AuditEntry, Reservation, Room, WatchChannel
from roombridge.queue import redis
from tests.factories import make_reservation, make_room
from tests.support import examples
from tests.webapp.signin import csrf_token, sign_in

# The @example inputs below are the 500s this fuzzing once found (a capacity past the integer
# column, a finder date at the end of the calendar): they guard the fixes.
FUZZ = settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Header values as HTTP can carry them (latin-1, no control characters), and form text of any kind.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300)
form_text = st.text(max_size=300)

# --- the webhook ---------------------------------------------------------------------------------

URL = "/webhooks/google/calendar"
CHANNEL = "6d1f3a9e-2b7c-4e58-a0d4-9c3b5e7f1a2d"  # a UUID, as we issue channel ids
VALID = {
    "X-Goog-Channel-ID": CHANNEL, "X-Goog-Channel-Token": "the-right-token", "X-Goog-Resource-ID": "res-fuzz",
    "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": "42",
    "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/x/events?alt=json",
    "X-Goog-Channel-Expiration": "Sat, 22 Mar 2031 19:14:43 GMT",
}
SPECIAL = ["", " ", "sync", "exists", "not_exists", "-1", "1e9", "9" * 40, CHANNEL + " ", "x" * 65, "x" * 257,
           "the-right-token\x00", CHANNEL + "\x00", "ünïcödé", "0", "chan-fuzz", CHANNEL.upper(),
           "11111111-2222-4333-8444-555555555555"]


def _header(name: str):
    return st.one_of(st.just(VALID[name]), st.none(), st.sampled_from(SPECIAL), header_text)


push_headers = st.fixed_dictionaries({name: _header(name) for name in VALID})


@pytest.fixture
def app(make_app):
    # The fuzzer books and edits far faster than a person may (BOOKING_WRITES_PER_MINUTE; its 429 is
    # tested in tests/webapp): here every request must reach the rules under test.
    return make_app(BOOKING_WRITES_PER_MINUTE=1_000_000, INVITATIONS_PER_HOUR=1_000_000)


@pytest.fixture
def channel_app(app):
    with app.app_context():
        session = db.session()
        room = make_room(session)
        session.add(WatchChannel(id=CHANNEL, room_id=room.id, resource_id="res-fuzz", token="the-right-token",
                                 address="https://example.com" + URL, expiration=utcnow() + timedelta(days=1)))
        session.commit()
    return app


def _push_state(app) -> tuple:
    with app.app_context():
        channel = db.session().get(WatchChannel, CHANNEL)
        conn = redis()
        # The channel's entry in Redis may be written by any push that names it (it copies the
        # row), and an unknown channel id is remembered as unknown; what a push records is its
        # counts, the sync request and the minute's counter.
        caches = (b"roombridge:channel:", b"roombridge:unknown-channel:")
        return (channel.push_count, channel.sync_received_at, channel.last_message_number,
                notifications.pending_pushes(conn, [CHANNEL]), conn.llen("rq:queue:sync"),
                sorted(k for k in conn.keys("roombridge:*") if not k.startswith(caches)))


@FUZZ
@given(headers=push_headers)
@example(headers={**VALID, "X-Goog-Resource-ID": "ünïcödé"})  # once a 500: compare_digest of non-ASCII str
# Issue #19: a 500 on PostgreSQL (a NUL in the channel id reached the database lookup).
@example(headers={**VALID, "X-Goog-Channel-ID": "the-right-token\x00"})
@example(headers={**VALID, "X-Goog-Channel-ID": CHANNEL[:-1] + "\x00"})  # a NUL in an id of our shape
def test_fuzzed_push_headers_never_500_and_a_refused_push_changes_nothing(channel_app, headers):
    client = channel_app.test_client()
    before = _push_state(channel_app)
    response = client.post(URL, headers={k: v for k, v in headers.items() if v is not None})
    assert response.status_code in (200, 400, 403, 404), response.get_data(as_text=True)
    if response.status_code != 200:
        assert _push_state(channel_app) == before


# --- the HTML forms ------------------------------------------------------------------------------

BOOKING_FIELDS = ("room_id", "title", "date", "start", "end", "attendees", "description", "repeat",
                  "repeat_count", "repeat_until")
PLAUSIBLE = {
    "room_id": ["1", "2", "0", "-1", "999999999999999999999", "1.5", "abc"],
    "title": ["Planning", "", " ", "x" * 201],
    "date": ["2030-01-07", "2030-02-30", "0001-01-01", "9999-12-31", "07/01/2030", "yesterday"],
    "start": ["10:00", "25:00", "09:60", "9", "-1:00", "10:00:00"],
    "end": ["11:00", "10:00", "24:00", "00:00", "11"],
    "attendees": ["bob@example.com", "bob@example.com, carol@example.com", "not an address", "a@b," * 300],
    "description": ["", "notes", "x" * 6000],
    "repeat": ["none", "daily", "weekly", "monthly", ""],
    "repeat_count": ["", "1", "0", "52", "53", "-3", "many"],
    "repeat_until": ["", "2030-02-01", "2020-01-01", "never"],
}


def _field(name: str, choices: dict[str, list[str]]):
    return st.one_of(st.sampled_from(choices[name]), form_text, st.none())


booking_forms = st.fixed_dictionaries(
    {name: _field(name, PLAUSIBLE) for name in BOOKING_FIELDS},
    optional={"weekdays": st.lists(st.one_of(st.sampled_from(["0", "3", "6", "7", "mon"]), form_text), max_size=8)},
)


def _form(data: dict, token: str) -> dict:
    return {**{k: v for k, v in data.items() if v is not None}, "csrf_token": token}


def _rows(app, model) -> list[tuple]:
    """Every column of every row: a refused form must not have changed any of it."""
    with app.app_context():
        table = model.__table__
        return [tuple(row) for row in db.session().execute(sa.select(table).order_by(*table.primary_key.columns))]


@pytest.fixture
def signed_in(app):
    """alice signed in, a room she may book and a reservation of hers to edit; the form's CSRF token."""
    with app.app_context():
        session = db.session()
        room = make_room(session, name="Orion", capacity=6)
        reservation = make_reservation(session, room, start=utcnow().replace(hour=10, minute=0, second=0,
                                                                             microsecond=0) + timedelta(days=5))
        session.commit()
        ids = room.id, reservation.id
    client = app.test_client()
    sign_in(client, "alice@example.com")
    return client, csrf_token(client, "/book"), ids


@FUZZ
@given(data=booking_forms)
def test_fuzzed_booking_form_never_500_and_stores_nothing_when_refused(app, signed_in, data):
    client, token, _ids = signed_in
    before = _rows(app, Reservation), _rows(app, AuditEntry)
    response = client.post("/book", data=_form(data, token))
    assert response.status_code in (302, 409, 422), response.get_data(as_text=True)[:500]
    if response.status_code != 302:
        assert (_rows(app, Reservation), _rows(app, AuditEntry)) == before


@FUZZ
@given(data=booking_forms)
def test_fuzzed_edit_form_never_500_and_changes_nothing_when_refused(app, signed_in, data):
    client, token, (_room_id, reservation_id) = signed_in
    before = _rows(app, Reservation), _rows(app, AuditEntry)
    response = client.post(f"/reservations/{reservation_id}/edit", data=_form(data, token))
    assert response.status_code in (302, 409, 422), response.get_data(as_text=True)[:500]
    if response.status_code != 302:
        assert (_rows(app, Reservation), _rows(app, AuditEntry)) == before


ROOM_FIELDS = {
    "calendar_id": ["new-room@resource.calendar.google.com", "someone@example.com", "",
                    "@resource.calendar.google.com"],
    "name": ["Orion", "", "x" * 201],
    "capacity": ["", "0", "8", "-2", "1e3", "99999999999999999999"],
    "building": ["", "HQ"],
    "floor": ["", "2", "x" * 51],
    "features": ["", "projector,whiteboard", ",,,", "x" * 500],
    "time_zone": ["UTC", "Europe/London", "Mars/Olympus", ""],
    "bookable_hours": ["", "07:00-20:00", "20:00-07:00", "25:00-26:00", "7-8"],
    "max_duration_minutes": ["", "60", "0", "-5", "lots"],
    "max_days_ahead": ["", "30", "0", "100000000000"],
    "min_notice_minutes": ["", "15", "-1"],
}
room_forms = st.fixed_dictionaries({name: _field(name, ROOM_FIELDS) for name in ROOM_FIELDS})


@pytest.fixture
def admin(app):
    with app.app_context():
        session = db.session()
        room_id = make_room(session, name="Vega").id
        session.commit()
    client = app.test_client()
    sign_in(client, "admin@example.com")
    return client, csrf_token(client, "/admin/"), room_id


@FUZZ
@given(data=room_forms)
@example(data={**{name: "" for name in ROOM_FIELDS}, "name": "Vega", "capacity": "99999999999999999999"})
def test_fuzzed_room_edit_form_never_500_and_changes_nothing_when_refused(app, admin, data):
    client, token, room_id = admin
    before = _rows(app, Room), _rows(app, AuditEntry)
    response = client.post(f"/admin/rooms/{room_id}", data=_form(data, token))
    assert response.status_code in (302, 422), response.get_data(as_text=True)[:500]
    if response.status_code != 302:
        assert (_rows(app, Room), _rows(app, AuditEntry)) == before


@FUZZ
@given(data=room_forms)
# Once a 500: a time zone name too long for a file name made zoneinfo raise OSError.
@example(data={"calendar_id": "new-room@resource.calendar.google.com", "capacity": "", "features": "",
               "time_zone": "0" * 300, "max_duration_minutes": "", "max_days_ahead": "", "min_notice_minutes": ""})
def test_fuzzed_room_add_form_never_500_and_adds_nothing_when_refused(app, admin, data):
    # No Google configured in this app: a form that passes validation is refused by Google's absence (502).
    client, token, _room_id = admin
    before = _rows(app, Room), _rows(app, AuditEntry)
    response = client.post("/admin/rooms/new", data=_form(data, token))
    assert response.status_code in (422, 502), response.get_data(as_text=True)[:500]
    assert (_rows(app, Room), _rows(app, AuditEntry)) == before


@FUZZ
@given(data=st.dictionaries(form_text, form_text, max_size=5))
def test_fuzzed_cancel_form_only_cancels_with_a_valid_token(app, signed_in, data):
    client, _token, (_room_id, reservation_id) = signed_in
    before = _rows(app, Reservation)
    data.pop("csrf_token", None)  # any fields at all, but never the session's token: refused as a forged form
    response = client.post(f"/reservations/{reservation_id}/cancel", data=data)
    assert response.status_code == 400
    assert _rows(app, Reservation) == before


signin_forms = st.fixed_dictionaries({
    "email": st.one_of(st.sampled_from(["alice@example.com", "ALICE@example.com ", "mallory@example.com", ""]),
                       form_text, st.none()),
    "next": st.one_of(st.sampled_from(["/", "/book", "//evil.example.com/", "https://evil.example.com/",
                                       "/\\evil.example.com", "javascript:alert(1)"]), form_text, st.none()),
})


@FUZZ
@given(data=signin_forms)
def test_fuzzed_sign_in_form_never_500_and_only_redirects_to_our_own_pages(app, data):
    client = app.test_client()
    response = client.post("/signin", data=_form(data, csrf_token(client)))
    # 422: a field holds text the database cannot store (webapp/security.py).
    assert response.status_code in (302, 400, 422), response.get_data(as_text=True)[:500]
    if response.status_code == 302:
        location = response.headers["Location"]
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    else:  # refused: still signed out
        assert client.get("/book").status_code == 302


finder_queries = st.fixed_dictionaries({}, optional={
    "date": st.one_of(st.sampled_from(PLAUSIBLE["date"]), form_text),
    "start": st.one_of(st.sampled_from(PLAUSIBLE["start"]), form_text),
    "end": st.one_of(st.sampled_from(PLAUSIBLE["end"]), form_text),
    "people": st.one_of(st.sampled_from(["1", "0", "-4", "99999999999999999999", "two"]), form_text),
    "building": form_text, "floor": form_text,
    "features": st.lists(form_text, max_size=5),
})


@FUZZ
@given(query=finder_queries)
@example(query={"date": "9999-12-31"})
def test_fuzzed_room_finder_query_never_500(app, signed_in, query):
    client, _token, _ids = signed_in
    before = _rows(app, Reservation)
    response = client.get("/", query_string=query)
    assert response.status_code in (200, 422), response.get_data(as_text=True)[:500]
    assert _rows(app, Reservation) == before

"""The JSON API at /api/v1: tokens, validation, conflicts, permissions, OpenAPI, races, fuzzing."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi

from roombridge import api_tokens, booking, db
from roombridge.gcal import RESERVATION_PROPERTY, event_id_for
from roombridge.models import ApiToken, Reservation, ReservationStatus
from tests.factories import make_reservation, make_room
from tests.support import SERVICE_ACCOUNT, examples, invoke_ok, run_jobs

LONDON = ZoneInfo("Europe/London")


def slot(days: int = 3, hour: int = 10, minutes: int = 60) -> tuple[str, str]:
    day = datetime.now(LONDON).date() + timedelta(days=days)
    start = datetime.combine(day, time(hour), LONDON)
    return start.isoformat(), (start + timedelta(minutes=minutes)).isoformat()


class Api:
    """A test client that speaks as one of a few users, each with a real token."""

    def __init__(self, app):
        self.app = app
        self.client = app.test_client()
        with app.app_context():
            session = db.session()
            self.tokens = {who: api_tokens.create(session, f"{who}@example.com").token
                           for who in ("alice", "bob", "carol", "admin")}
            self.room = make_room(session, name="Orion", capacity=4)
            self.room_id = self.room.id
            session.commit()

    def call(self, method, path, as_="alice", **kwargs):
        headers = {"Authorization": f"Bearer {self.tokens[as_]}"} if as_ else {}
        return self.client.open(f"/api/v1{path}", method=method, headers=headers, **kwargs)

    def book(self, as_="alice", **fields):
        start, end = slot()
        body = {"room_id": self.room_id, "title": "Planning", "start": start, "end": end, **fields}
        return self.call("POST", "/reservations", as_=as_, json=body)

    def count(self) -> int:
        with self.app.app_context():
            return db.session().scalar(sa.select(sa.func.count(Reservation.id)))


@pytest.fixture
def api(app):
    return Api(app)


@pytest.fixture
def fuzz_api(make_app):
    """Many writes of one person in a few seconds: past the default rate limit, which is not under test."""
    return Api(make_app(BOOKING_WRITES_PER_MINUTE=100_000))


def test_tokens_are_required_and_revocable(api, runner):
    assert api.call("GET", "/rooms", as_=None).status_code == 401
    assert api.client.get("/api/v1/rooms", headers={"Authorization": "Bearer rb_nonsense"}).status_code == 401
    assert api.call("GET", "/rooms").status_code == 200

    token = invoke_ok(runner, ["tokens", "create", "dave@example.com"]).output.strip()
    assert token.startswith("rb_")
    with api.app.app_context():
        stored = db.session().scalars(sa.select(ApiToken.token_hash)).all()
    assert token not in stored and api_tokens.hash_token(token) in stored  # only the hash is kept
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/v1/rooms", headers=headers).status_code == 200
    listing = invoke_ok(runner, ["tokens", "list", "--email", "dave@example.com"]).output
    assert token[:9] in listing and token not in listing and "live" in listing
    invoke_ok(runner, ["tokens", "revoke", token[:9]])
    assert api.client.get("/api/v1/rooms", headers=headers).status_code == 401
    assert runner.invoke(args=["tokens", "create", "not-an-email"]).exit_code != 0


def test_create_get_list_patch_delete(api):
    answer = api.book(attendees=["Bob@example.com", "bob@example.com"], description="Quarterly")
    assert answer.status_code == 201, answer.json
    made = answer.json
    assert answer.headers["Location"] == f"/api/v1/reservations/{made['id']}"
    assert made["status"] == "pending" and made["source"] == "api" and made["organiser"] == "alice@example.com"
    assert made["attendees"] == ["bob@example.com"]
    assert made["start"].endswith("Z") and made["time_zone"] == "Europe/London"
    assert datetime.fromisoformat(made["start_local"]) == datetime.fromisoformat(made["start"])
    assert "warnings" not in made

    rid = made["id"]
    assert api.call("GET", f"/reservations/{rid}", as_="bob").json["id"] == rid  # bob attends
    assert api.call("GET", f"/reservations/{rid}", as_="carol").status_code == 404  # carol may not see it
    assert [r["id"] for r in api.call("GET", "/reservations").json["reservations"]] == [rid]
    assert api.call("GET", "/reservations", as_="carol").json["reservations"] == []
    assert [r["id"] for r in api.call("GET", f"/reservations?room={api.room_id}", as_="admin").json[
        "reservations"]] == [rid]
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    assert api.call("GET", "/reservations", query_string={"start": later}).json["reservations"] == []

    assert api.call("PATCH", f"/reservations/{rid}", as_="bob", json={"title": "Mine"}).status_code == 403
    assert api.call("PATCH", f"/reservations/{rid}", as_="carol", json={"title": "Mine"}).status_code == 404
    edited = api.call("PATCH", f"/reservations/{rid}", json={
        "title": "Retro", "attendees": ["b@example.com", "c@example.com", "d@example.com", "e@example.com"]})
    assert edited.status_code == 200, edited.json
    assert edited.json["title"] == "Retro"
    assert edited.json["warnings"] == ["5 people are invited but Orion seats 4."]

    assert api.call("DELETE", f"/reservations/{rid}", as_="bob").status_code == 404  # bob was dropped
    cancelled = api.call("DELETE", f"/reservations/{rid}", as_="admin")
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert api.call("GET", "/reservations/999999").status_code == 404


def test_conflict_names_the_clashing_reservation(api):
    first = api.book().json
    start, end = slot(hour=10, minutes=30)
    clash = api.book(as_="bob", start=start, end=end)
    assert clash.status_code == 409
    assert clash.json["error"] == "conflict"
    assert clash.json["clashes"] == [{"reservation_id": first["id"], "start": first["start"], "end": first["end"],
                                      "title": "Planning"}]
    assert api.count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"start": "tomorrow at ten"}, "start"),
        ({"start": "2030-01-07T10:00:00"}, "start"),  # no offset: ambiguous, refused
        ({"end": "2020-01-01T10:00:00Z"}, "end"),  # before start
        ({"room_id": 424242}, "room_id"),
        ({"room_id": "1"}, "room_id"),
        ({"attendees": ["not an address"]}, "attendees"),
        ({"attendees": "bob@example.com"}, "attendees"),
        ({"title": "x" * 201}, "title"),
        ({"title": ""}, "title"),
        ({"description": "x" * 5001}, "description"),
        ({"colour": "blue"}, "colour"),
        ({"recurrence": {"frequency": "yearly", "count": 2}}, "recurrence"),
        ({"recurrence": {"frequency": "daily", "count": 2, "until": "2031-01-01"}}, "recurrence"),
        ({"start": "9999-12-31T23:00:00+00:00", "end": "9999-12-31T23:30:00+00:00"}, "start"),
    ],
)
def test_bad_input_is_422_with_per_field_messages(api, change, field):
    answer = api.book(**change)
    assert answer.status_code == 422, answer.json
    assert answer.json["error"] == "invalid"
    assert field in answer.json["errors"], answer.json
    assert all(isinstance(m, (str, dict, list)) for m in answer.json["errors"].values())
    assert api.count() == 0


def test_malformed_bodies(api):
    for body in ("[1, 2]", "null", '"text"'):
        answer = api.call("POST", "/reservations", data=body, content_type="application/json")
        assert answer.status_code == 422
        assert "_schema" in answer.json["errors"]
    not_json = api.call("POST", "/reservations", data="not json", content_type="application/json")
    assert (not_json.status_code, not_json.json["error"]) == (400, "bad_request")
    as_form = api.call("PATCH", "/reservations/1", data="title=x", content_type="application/x-www-form-urlencoded")
    assert as_form.status_code == 404  # no reservation 1: looked up before the body is read
    made = api.book().json
    as_form = api.call("PATCH", f"/reservations/{made['id']}", data="title=x",
                       content_type="application/x-www-form-urlencoded")
    assert (as_form.status_code, as_form.json["error"]) == (415, "unsupported_media_type")
    huge = api.call("POST", "/reservations", data=b"{" + b" " * (256 * 1024) + b"}", content_type="application/json")
    assert (huge.status_code, huge.json["error"]) == (413, "request_entity_too_large")
    assert api.count() == 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/reservations/-1", 404),
        ("GET", "/reservations/0", 404),
        ("GET", "/reservations/007", 404),
        ("GET", "/reservations/9223372036854775808", 404),
        ("GET", "/reservations/2147483648", 404),
        ("PATCH", "/reservations/9223372036854775808", 404),
        ("DELETE", "/reservations/9223372036854775808", 404),
        ("DELETE", "/reservations/0", 404),  # not 405: no route matches an id out of range
        ("POST", "/reservations/9223372036854775808/retry", 404),
        ("GET", "/rooms/9223372036854775808/availability?date=2030-01-07", 404),
        ("GET", "/reservations/2147483647", 404),  # the largest id: looked up, not found
        ("GET", "/no/such/thing", 404),
        ("GET", "", 404),
        ("PUT", "/reservations/3", 405),
        ("DELETE", "/reservations", 405),
        ("POST", "/rooms", 405),
    ],
)
def test_every_refusal_under_api_v1_is_json_in_the_error_shape(api, method, path, status):
    answer = api.call(method, path, json={"title": "x"} if method in ("PATCH", "POST", "PUT") else None)
    assert answer.status_code == status, answer.get_data(as_text=True)[:300]
    assert answer.is_json, answer.get_data(as_text=True)[:300]
    assert set(answer.json) <= {"error", "message", "errors", "clashes"} and answer.json["error"]
    if status == 405:
        assert answer.json["error"] == "method_not_allowed" and answer.headers["Allow"]


def test_a_rate_limit_under_api_v1_is_json_and_keeps_retry_after(api):
    """No route limits rates yet; whatever raises 429 under /api/v1 answers in the error shape."""
    from werkzeug.exceptions import TooManyRequests

    from webapp.api import http_error_as_json

    with api.app.test_request_context("/api/v1/reservations"):
        body, status, headers = http_error_as_json(TooManyRequests(retry_after=30))
    assert (status, body.json["error"], headers) == (429, "too_many_requests", {"Retry-After": "30"})
    with api.app.test_request_context("/reservations"):
        assert isinstance(http_error_as_json(TooManyRequests()), TooManyRequests)  # pages: untouched


def test_an_unexpected_failure_is_a_json_500_and_pages_keep_html(api, monkeypatch):
    from roombridge import booking

    api.app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: no test harness to re-raise into

    def broken(*args, **kwargs):
        raise RuntimeError("the database fell over")

    monkeypatch.setattr(booking, "list_reservations", broken)
    answer = api.call("GET", "/reservations")
    assert (answer.status_code, answer.json["error"]) == (500, "internal_server_error")
    assert "fell over" not in answer.get_data(as_text=True)
    page = api.client.get("/no/such/page")
    assert page.status_code == 404 and not page.is_json


def test_a_state_that_refuses_the_change_is_409(api):
    made = api.book().json
    assert api.call("DELETE", f"/reservations/{made['id']}").status_code == 200
    edited = api.call("PATCH", f"/reservations/{made['id']}", json={"title": "Again"})
    assert (edited.status_code, edited.json["error"]) == (409, "wrong_state")
    retried = api.call("POST", f"/reservations/{made['id']}/retry")
    assert (retried.status_code, retried.json["error"]) == (409, "wrong_state")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"title": "   "}, "title"),  # blank after the domain strips it: the schema's pattern says so
        ({"title": "a\x00b"}, "title"),
        ({"start": "1999-12-31T23:00:00Z", "end": "2000-01-01T00:30:00Z"}, "start"),
        ({"start": "2200-01-01T10:00:00Z", "end": "2200-01-01T11:00:00Z"}, "start"),
        ({"recurrence": {"frequency": "daily"}}, "recurrence"),
        ({"recurrence": {"frequency": "daily", "count": None, "until": None}}, "recurrence"),
        ({"recurrence": {"frequency": "daily", "count": 2, "until": "2031-01-01"}}, "recurrence"),
        ({"recurrence": {"frequency": "daily", "until": "2200-01-01"}}, "recurrence"),
    ],
)
def test_limits_the_code_enforces_are_in_the_description(api, change, field):
    """Each body the API refuses for a limit is refused by the description's JSON Schema too."""
    spec = api.client.get("/api/v1/openapi.json").json
    start, end = slot()
    body = {"room_id": api.room_id, "title": "Planning", "start": start, "end": end, **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, {**spec["components"]["schemas"]["ReservationCreate"],
                                   "components": spec["components"]})
    answer = api.book(**change)
    assert answer.status_code == 422 and field in answer.json["errors"], answer.json


def test_the_years_allowed_are_the_years_written(api):
    # 2199-12-31T23:00-05:00 is 2200 in UTC, but the description's pattern admits it: so does the code.
    answer = api.call("GET", "/reservations", query_string={"start": "2199-12-31T23:00:00-05:00"})
    assert answer.status_code == 200
    assert api.call("GET", "/reservations", query_string={"start": "2200-01-01T00:00:00+05:00"}).status_code == 422
    assert api.call("GET", f"/rooms/{api.room_id}/availability?date=2199-12-31").status_code == 200
    assert api.call("GET", f"/rooms/{api.room_id}/availability?date=1999-12-31").status_code == 422


def test_the_docs_page_boots_the_vendored_swagger_ui_without_inline_script(api):
    page = api.client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-spec-url="/api/v1/openapi.json"' in html
    scripts = [line.strip() for line in html.splitlines() if "<script" in line]
    assert scripts == ['<script src="/static/swagger-ui/swagger-ui-bundle.js"></script>',
                       '<script src="/static/api-docs.js"></script>']
    for asset in ("/static/swagger-ui/swagger-ui-bundle.js", "/static/swagger-ui/swagger-ui.css",
                  "/static/api-docs.js"):
        with api.client.get(asset) as served:
            assert served.status_code == 200
    assert "http" not in html  # every asset from our own static files: no CDN


def test_a_weekly_series_and_skipping_clashes(api):
    start, end = slot(days=2)
    blocker = api.book(start=(datetime.fromisoformat(start) + timedelta(days=7)).isoformat(),
                       end=(datetime.fromisoformat(end) + timedelta(days=7)).isoformat()).json
    series = {"recurrence": {"frequency": "weekly", "count": 3}, "start": start, "end": end}
    refused = api.book(as_="bob", **series)
    assert refused.status_code == 409
    assert [c["reservation_id"] for c in refused.json["clashes"]] == [blocker["id"]]
    made = api.book(as_="bob", skip_conflicts=True, **series)
    assert made.status_code == 201, made.json
    assert len(made.json["reservations"]) == 2 and len(made.json["skipped"]) == 1
    assert len({r["series_id"] for r in made.json["reservations"]}) == 1


def test_scope_edits_and_cancels_one_following_or_all_occurrences(api):
    start, end = slot(days=2)
    made = api.book(recurrence={"frequency": "weekly", "count": 4}, start=start, end=end).json
    ids = [r["id"] for r in made["reservations"]]

    one = api.call("PATCH", f"/reservations/{ids[1]}", json={"title": "Only this"})
    assert one.status_code == 200 and one.json["title"] == "Only this"
    assert [api.call("GET", f"/reservations/{i}").json["title"] for i in ids] == [
        "Planning", "Only this", "Planning", "Planning"]

    following = api.call("PATCH", f"/reservations/{ids[2]}?scope=following", json={"title": "From here"})
    assert following.status_code == 200, following.json
    answers = [api.call("GET", f"/reservations/{i}").json for i in ids]
    assert [a["title"] for a in answers] == ["Planning", "Only this", "From here", "From here"]
    assert answers[2]["series_id"] == answers[3]["series_id"] != answers[0]["series_id"]

    everything = api.call("PATCH", f"/reservations/{ids[0]}?scope=all", json={"title": "Everything"})
    assert everything.status_code == 200
    assert [api.call("GET", f"/reservations/{i}").json["title"] for i in ids[:2]] == ["Everything"] * 2

    assert api.call("PATCH", f"/reservations/{ids[0]}?scope=some", json={"title": "x"}).status_code == 422
    assert api.call("DELETE", f"/reservations/{ids[0]}?scope=never").status_code == 422
    cancelled = api.call("DELETE", f"/reservations/{ids[2]}?scope=all")
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert [api.call("GET", f"/reservations/{i}").json["status"] for i in ids] == [
        "pending", "pending", "cancelled", "cancelled"]
    assert api.call("DELETE", f"/reservations/{ids[0]}").json["status"] == "cancelled"
    assert api.call("GET", f"/reservations/{ids[1]}").json["status"] == "pending"
    # A single booking: every scope is itself, and it may move to another day.
    single = api.book(start=slot(days=4)[0], end=slot(days=4)[1]).json
    moved = api.call("PATCH", f"/reservations/{single['id']}?scope=all",
                     json={"start": slot(days=6)[0], "end": slot(days=6)[1]})
    assert moved.status_code == 200 and moved.json["start_local"] == slot(days=6)[0]
    # A series moves within its days ("all" to another day is refused, saying why).
    refused = api.call("PATCH", f"/reservations/{ids[1]}?scope=all",
                       json={"start": slot(days=5)[0], "end": slot(days=5)[1]})
    assert refused.status_code == 422 and "within its days" in refused.json["errors"]["start"][0]


def test_rooms_and_availability(api):
    with api.app.app_context():
        session = db.session()
        room = session.get(make_room.__globals__["Room"], api.room_id)
        make_room(session, name="Hidden", in_scope=False)
        # 23:00-24:00Z on 6 Jan 2030 is 6 Jan in London: not part of 7 Jan.
        make_reservation(session, room, datetime(2030, 1, 6, 23, 0, tzinfo=UTC))
        busy = make_reservation(session, room, datetime(2030, 1, 7, 9, tzinfo=UTC))
        session.commit()
    rooms = api.call("GET", "/rooms").json["rooms"]
    assert [r["name"] for r in rooms] == ["Orion"]
    day = api.call("GET", f"/rooms/{api.room_id}/availability", query_string={"date": "2030-01-07"})
    assert day.status_code == 200
    assert [b["reservation_id"] for b in day.json["busy"]] == [busy.id]
    assert day.json["busy"][0]["start"] == "2030-01-07T09:00:00Z"
    assert api.call("GET", f"/rooms/{api.room_id}/availability?date=7 Jan").status_code == 422
    assert api.call("GET", f"/rooms/{api.room_id}/availability").status_code == 422
    assert api.call("GET", "/rooms/999/availability?date=2030-01-07").status_code == 404


def test_openapi_is_valid_and_describes_every_route_and_answer(api):
    spec = api.client.get("/api/v1/openapi.json").json
    validate_openapi(spec)
    routes = {
        rule.rule.removeprefix("/api/v1").replace("<id:", "{").replace(">", "}")
        for rule in api.app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
    }
    assert routes == set(spec["paths"])
    for path, item in spec["paths"].items():
        for method in item:
            if method != "parameters":
                assert any(m for m in api.app.url_map.iter_rules()
                           if m.endpoint.startswith("api.") and method.upper() in m.methods
                           and m.rule.removeprefix("/api/v1").replace("<id:", "{").replace(">", "}") == path)

    def check(answer, path, method, status):
        described = spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
        assert answer.status_code == status, answer.json
        jsonschema.validate(answer.json, {**described, "components": spec["components"]},
                            format_checker=jsonschema.FormatChecker())

    made = api.book(attendees=["a@example.com"] * 2 + ["b@example.com"] * 4)
    check(made, "/reservations", "post", 201)
    rid = made.json["id"]
    check(api.book(), "/reservations", "post", 409)
    check(api.book(title=""), "/reservations", "post", 422)
    check(api.book(as_="bob", recurrence={"frequency": "daily", "count": 2}, start=slot(days=5)[0],
                   end=slot(days=5)[1]), "/reservations", "post", 201)
    check(api.call("GET", "/reservations"), "/reservations", "get", 200)
    check(api.call("GET", f"/reservations/{rid}"), "/reservations/{reservation_id}", "get", 200)
    check(api.call("PATCH", f"/reservations/{rid}", json={"title": "x"}), "/reservations/{reservation_id}", "patch",
          200)
    check(api.call("GET", "/rooms"), "/rooms", "get", 200)
    check(api.call("GET", f"/rooms/{api.room_id}/availability?date={date.today()}"),
          "/rooms/{room_id}/availability", "get", 200)
    check(api.call("DELETE", f"/reservations/{rid}"), "/reservations/{reservation_id}", "delete", 200)
    # The request schemas are the ones the handlers load with: a required field is required.
    assert set(spec["components"]["schemas"]["ReservationCreate"]["required"]) == {"room_id", "title", "start", "end"}


def test_a_reservation_made_by_the_api_lands_on_the_room_calendar(make_app, emulator, service_account_file):
    calendar_id = "room-api@resource.calendar.google.com"
    emulator.state.add_calendar(calendar_id, "Api room", kind="room")
    emulator.state.share(calendar_id, SERVICE_ACCOUNT, "writer")
    app = make_app(GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file, GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url)
    with app.app_context():
        session = db.session()
        room_id = make_room(session, calendar_id=calendar_id).id
        token = api_tokens.create(session, "alice@example.com").token
    client, headers = app.test_client(), {"Authorization": f"Bearer {token}"}
    start, end = slot()
    made = client.post("/api/v1/reservations", headers=headers,
                       json={"room_id": room_id, "title": "Launch", "start": start, "end": end})
    assert made.status_code == 201
    run_jobs(app, queues=("write",))
    shown = client.get(f"/api/v1/reservations/{made.json['id']}", headers=headers).json
    assert shown["status"] == "confirmed"
    [event] = emulator.state.raw_events(calendar_id)
    assert event["id"] == shown["google_event_id"] == event_id_for(made.json["id"])
    assert event["extendedProperties"]["private"][RESERVATION_PROPERTY] == str(made.json["id"])
    assert event["summary"] == "Launch"


def test_fifty_concurrent_requests_for_one_slot_make_exactly_one_reservation(make_app):
    api = Api(make_app(BOOKING_WRITES_PER_MINUTE=100))  # fifty writes of one person: past the default rate
    start, end = slot()
    body = {"room_id": api.room_id, "title": "Race", "start": start, "end": end}
    barrier = threading.Barrier(50)
    statuses: list[int] = []

    def attempt():
        client = api.app.test_client()
        barrier.wait()
        answer = client.post("/api/v1/reservations", json=body,
                             headers={"Authorization": f"Bearer {api.tokens['alice']}"})
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201] + [409] * 49
    assert api.count() == 1


# --- fuzzing: malformed bodies never cause a 500 and never store anything ------------------------

VALID_FIELDS = {"title": "Planning", "attendees": [], "description": ""}
junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
datetimes_ish = st.one_of(
    st.text(max_size=30),
    st.datetimes().map(lambda d: d.isoformat()),  # naive
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.sampled_from(["2030-02-30T10:00:00Z", "2030-01-07T25:00:00Z", "0001-01-01T00:00:00+14:00",
                     "9999-12-31T23:59:59-12:00", "2030-01-07T10:00:00\x00Z"]),
)
field_values = {
    "room_id": st.one_of(junk, st.integers(min_value=-(2**70), max_value=2**70)),
    "title": st.one_of(junk, st.text(min_size=190, max_size=260), st.just("\x00"), st.just("\ud800")),
    "start": st.one_of(junk, datetimes_ish),
    "end": st.one_of(junk, datetimes_ish),
    "attendees": st.one_of(junk, st.lists(st.one_of(st.emails(), st.text(max_size=20)), max_size=4)),
    "description": st.one_of(junk, st.just("\ud800\x00")),
    "recurrence": st.one_of(junk, st.fixed_dictionaries({}, optional={
        "frequency": st.sampled_from(["daily", "weekly", "monthly", 1]), "count": junk | st.integers(),
        "until": st.one_of(junk, st.dates().map(str)), "weekdays": junk | st.lists(st.integers(), max_size=8)})),
    "skip_conflicts": junk,
}


@st.composite
def malformed_bodies(draw):
    """A body with at least one thing wrong: a required field missing, a bad value, or an unknown field."""
    start = datetime(2030, 1, 7, 10, tzinfo=UTC)
    body = {"room_id": 1, "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), **VALID_FIELDS}
    corrupted = draw(st.lists(st.sampled_from(sorted(field_values)), min_size=1, max_size=4, unique=True))
    for name in corrupted:
        body[name] = draw(field_values[name])
    for name in draw(st.lists(st.sampled_from(["room_id", "title", "start", "end"]), max_size=2, unique=True)):
        body.pop(name, None)
    if draw(st.booleans()):
        body[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in field_values))] = draw(junk)
    if all(name in body for name in ("room_id", "title", "start", "end")) and set(body) <= set(field_values) and (
        body["room_id"] == 1 and body["title"] == "Planning" and body.get("recurrence") is None
    ):
        body["unexpected"] = True  # this draw happened to be well-formed; make sure it is not
    return draw(st.one_of(st.just(body), st.lists(st.just(body), max_size=1), junk.filter(lambda j: j != body)))


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=malformed_bodies())
def test_fuzzed_bodies_never_500_and_store_nothing(fuzz_api, body):
    api = fuzz_api
    answer = api.call("POST", "/reservations", json=body)
    assert answer.status_code in (400, 409, 415, 422), (body, answer.status_code, answer.get_data(as_text=True)[:300])
    assert answer.is_json
    assert api.count() == 0
    with api.app.app_context():
        assert db.session().scalar(
            sa.select(sa.func.count(Reservation.id)).where(Reservation.status != ReservationStatus.CANCELLED)) == 0


@st.composite
def malformed_patches(draw):
    body = {}
    for name in draw(st.lists(st.sampled_from(["room_id", "title", "start", "end", "attendees", "description"]),
                              min_size=1, max_size=3, unique=True)):
        body[name] = draw(field_values[name])
    if draw(st.booleans()):
        body["recurrence"] = draw(junk)  # not editable: always refused
    return draw(st.one_of(st.just(body), junk.filter(lambda j: not isinstance(j, dict) or "recurrence" in j)))


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=malformed_patches())
def test_fuzzed_edits_never_500_and_change_nothing_when_refused(fuzz_api, body):
    api = fuzz_api
    if not hasattr(api, "target"):
        made = api.book()
        assert made.status_code == 201
        api.target = made.json
    answer = api.call("PATCH", f"/reservations/{api.target['id']}", json=body)
    assert answer.status_code in (200, 409, 415, 422), (body, answer.status_code, answer.get_data(as_text=True)[:300])
    assert answer.is_json
    if answer.status_code != 200:
        shown = api.call("GET", f"/reservations/{api.target['id']}").json
        assert {k: shown[k] for k in ("room_id", "title", "start", "end", "attendees", "description")} == {
            k: api.target[k] for k in ("room_id", "title", "start", "end", "attendees", "description")}
    else:
        api.target = answer.json


# --- abuse by the product's own users ---------------------------------------------------------------


def test_two_hundred_and_one_outside_recipients_are_refused(make_app):
    api = Api(make_app(ALLOWED_DOMAINS="example.com"))
    answer = api.book(attendees=[f"target{i}@elsewhere.org" for i in range(201)])
    assert answer.status_code == 422
    assert answer.json["error"] == "invalid"
    [domains, count] = answer.json["errors"]["attendees"]
    assert "Only people of example.com can be invited" in domains and count == "At most 50 attendees."
    assert api.count() == 0
    assert api.book(attendees=["bob@example.com"]).status_code == 201


def test_a_title_with_a_line_break_is_refused(api):
    answer = api.book(title="Planning\r\nBcc: all@example.org")
    assert (answer.status_code, answer.json["errors"]) == (
        422, {"title": ["Must not contain line breaks or other control characters."]})
    made = api.book().json
    answer = api.call("PATCH", f"/reservations/{made['id']}", json={"title": "Line\u2028separator"})
    assert answer.status_code == 422 and list(answer.json["errors"]) == ["title"]


def test_reservations_match_an_attendee_address_exactly(api):
    with api.app.app_context():
        session = db.session()
        room = session.get(type(api.room), api.room_id)
        meant = make_reservation(session, room, organiser_email="carol@example.com",
                                 attendees=["alice.b@example.com"], title="Meant for alice.b").id
        mine = make_reservation(session, room, start=datetime(2030, 1, 8, 10, tzinfo=UTC),
                                organiser_email="carol@example.com", attendees=["alice_b@example.com"]).id
        session.commit()
        token = api_tokens.create(session, "alice_b@example.com").token
    headers = {"Authorization": f"Bearer {token}"}
    listed = api.client.get("/api/v1/reservations", headers=headers).json["reservations"]
    assert [r["id"] for r in listed] == [mine]
    assert api.client.get(f"/api/v1/reservations/{meant}", headers=headers).status_code == 404
    with api.app.app_context():  # "%" is LIKE's anything: "alice%b" must match no one either
        assert booking.list_reservations(db.session(), actor_email="alice%b@example.com", actor_is_admin=False) == []


def test_a_script_booking_one_after_another_meets_the_rate_limit_within_a_minute(api):
    answers = []
    for hour in range(7, 20):
        for minute in (0, 20, 40):  # 39 bookings, one after another, as fast as the client goes
            start = datetime.combine(datetime.now(LONDON).date() + timedelta(days=3), time(hour, minute), LONDON)
            answers.append(api.call("POST", "/reservations", json={
                "room_id": api.room_id, "title": "Script", "start": start.isoformat(),
                "end": (start + timedelta(minutes=20)).isoformat()}))
    assert [a.status_code for a in answers] == [201] * 30 + [429] * 9
    refused = answers[-1]
    assert refused.is_json and refused.json["error"] == "rate_limited"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.json["retry_after"] == int(refused.headers["Retry-After"])
    assert api.count() == 30
    # Edits and cancellations share the budget; another person and admins are not held up.
    assert api.call("DELETE", f"/reservations/{answers[0].json['id']}").status_code == 429
    start, end = slot(days=4)
    assert api.book(as_="bob", start=start, end=end).status_code == 201
    assert api.call("DELETE", f"/reservations/{answers[0].json['id']}", as_="admin").status_code == 200


def test_invitation_mails_past_the_hour_answer_429_with_retry_after(make_app):
    api = Api(make_app(INVITATIONS_PER_HOUR=3))
    assert api.book(attendees=["bob@example.com", "carol@example.com"]).status_code == 201
    refused = api.book(attendees=["bob@example.com"], start=slot(hour=12)[0], end=slot(hour=12)[1])
    assert refused.status_code == 429 and refused.json["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) > 0
    assert api.count() == 1

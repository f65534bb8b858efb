"""The Insights page, its CSV and the JSON API agree; the lobby overview and its ETag poll, signed in
or through a lobby screen's secret link."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from roombridge import api_tokens, db, displays
from roombridge.models import ReservationStatus, Room
from roombridge.unit_of_work import unit_of_work
from tests.factories import make_reservation, make_room
from tests.roombridge.test_insights import seed_known_week
from tests.support import invoke_ok
from tests.webapp.signin import csrf_token, sign_in

RANGE = "start=2030-01-07&end=2030-01-13"


def _seed(app):
    with app.app_context():
        session = db.session()
        with unit_of_work(session):
            seed_known_week(session)
        admin = api_tokens.create(session, "admin@example.com").token
        person = api_tokens.create(session, "alice@example.com").token
    return admin, person


def test_csv_holds_the_same_figures_as_the_api(app, client):
    admin, person = _seed(app)
    api = client.get(f"/api/v1/insights?{RANGE}", headers={"Authorization": f"Bearer {admin}"})
    assert api.status_code == 200
    assert client.get(f"/api/v1/insights?{RANGE}", headers={"Authorization": f"Bearer {person}"}).status_code == 403
    sign_in(client, "admin@example.com")
    answer = client.get(f"/admin/insights.csv?{RANGE}")
    assert answer.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert len(rows) == len(api.json["rooms"]) == 2
    for row, room in zip(rows, api.json["rooms"], strict=True):
        for name in ("bookings", "booked_hours", "checked_in_hours", "released_hours", "ended_early_hours"):
            assert float(row[name]) == room[name], name
        assert (float(row["no_show_rate"]) if row["no_show_rate"] else None) == room["no_show_rate"]
        assert {s: int(row[f"source_{s}"]) for s in room["sources"]} == room["sources"]
    assert api.json["total"]["booked_hours"] == 6.5
    only = client.get(f"/api/v1/insights?{RANGE}&building=HQ", headers={"Authorization": f"Bearer {admin}"})
    assert [r["name"] for r in only.json["rooms"]] == ["Atlas"]
    bad = client.get("/api/v1/insights?start=2030-02-01&end=2030-01-01", headers={"Authorization": f"Bearer {admin}"})
    assert bad.status_code == 422 and bad.json["errors"] == {"start": ["the start is after the end"]}


def test_the_page_draws_its_charts_and_table_for_admins_only(app, client):
    _seed(app)
    sign_in(client, "alice@example.com")
    assert client.get("/admin/insights").status_code == 403
    sign_in(client, "admin@example.com")
    html = client.get(f"/admin/insights?{RANGE}").get_data(as_text=True)
    assert html.count("<svg") >= 3 and 'id="heatmap"' in html
    assert "Released (no-show): 2.0 h." in html  # the bar's text alternative carries its number
    assert "Borealis: seats 4, on average 1.0 people" in html
    assert 'data-room-id' in html and "33%" in html  # Atlas's no-show rate in the table


def _lobby_rooms(app) -> tuple[int, datetime]:
    """HQ: a room busy now (with a secret title) and a free one; Annex: one room. The busy room and its end."""
    now = datetime.now(UTC)
    with app.app_context():
        session = db.session()
        with unit_of_work(session):
            busy = make_room(session, name="Busy room", building="HQ", time_zone="UTC")
            make_room(session, name="Free room", building="HQ", time_zone="UTC")
            make_room(session, name="Elsewhere", building="Annex")
            first = make_reservation(session, busy, now - timedelta(minutes=10), 40, title="Secret plan",
                                     status=ReservationStatus.CONFIRMED)
            return busy.id, first.end_at


def test_lobby_shows_free_and_busy_until_and_answers_304_when_unchanged(app, client):
    busy_id, first_end = _lobby_rooms(app)
    with app.app_context():
        session = db.session()
        with unit_of_work(session):
            make_reservation(session, session.get(Room, busy_id), first_end, 30, status=ReservationStatus.CONFIRMED)
    until = (first_end + timedelta(minutes=30)).strftime("%H:%M")  # back to back: busy until the second ends
    assert client.get("/lobby?building=HQ").status_code == 302  # sign-in first
    sign_in(client)
    html = client.get("/lobby?building=HQ").get_data(as_text=True)
    assert f"Busy until {until}" in html and "Free room" in html and "Elsewhere" not in html
    assert "Secret plan" not in html
    status = client.get("/lobby/status.json?building=HQ")
    rooms = {r["name"]: r for r in status.json["rooms"]}
    assert rooms["Busy room"] == {**rooms["Busy room"], "busy": True, "until": until}
    assert rooms["Free room"]["busy"] is False
    assert client.get("/lobby/status.json?building=HQ",
                      headers={"If-None-Match": status.headers["ETag"]}).status_code == 304


def test_a_lobby_link_shows_its_building_without_sign_in_and_nothing_else(app, client, runner):
    until = _lobby_rooms(app)[1].strftime("%H:%M")
    url = invoke_ok(runner, ["lobbies", "create", "hq"]).output.strip().splitlines()[-1]
    path = url.removeprefix(app.config["ROOMBRIDGE"].WEBHOOK_BASE_URL.rstrip("/"))
    assert path.startswith("/display/lobby/lb_")

    page = client.get(path)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and f"Busy until {until}" in html and "Free room" in html
    assert "Elsewhere" not in html and "Secret plan" not in html and page.headers["Referrer-Policy"] == "no-referrer"
    status = client.get(path + "/status.json")
    assert {r["name"] for r in status.json["rooms"]} == {"Busy room", "Free room"}
    assert client.get(path + "/status.json", headers={"If-None-Match": status.headers["ETag"]}).status_code == 304

    # Its building only: a query asking for another building is not heard.
    assert "Elsewhere" not in client.get(path + "?building=Annex").get_data(as_text=True)
    # No other page: the link is no sign-in, no room display, no API token.
    token = path.rsplit("/", 1)[1]
    assert client.get(f"/display/{token}").status_code == 404
    assert client.get(f"/display/{token}/state.json").status_code == 404
    assert client.post(f"/display/{token}/book", data={"minutes": "15"}).status_code == 404
    for other in ("/lobby?building=Annex", "/lobby/status.json", "/admin/", "/reservations"):
        assert client.get(other).status_code in (302, 401, 403), other
    assert client.get("/api/v1/rooms", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/display/lobby/lb_" + "x" * 43).status_code == 404

    # Revoked: 404 everywhere at once.
    assert "revoked 1 lobby link" in invoke_ok(runner, ["lobbies", "revoke", "HQ"]).output
    assert client.get(path).status_code == 404 and client.get(path + "/status.json").status_code == 404


def test_an_admin_creates_and_revokes_lobby_links_in_the_console(app, client):
    _lobby_rooms(app)
    sign_in(client, "admin@example.com")
    listing = client.get("/admin/lobbies").get_data(as_text=True)
    assert "No lobby link yet." in listing and "<option>HQ</option>" in listing
    created = client.post("/admin/lobbies", data={"building": "HQ", "csrf_token": csrf_token(client, "/admin/lobbies")})
    html = created.get_data(as_text=True)
    assert created.status_code == 200 and "data:image/svg+xml" in html
    path = html.split('id="display-url" type="text" readonly value="', 1)[1].split('"', 1)[0].removeprefix(
        app.config["ROOMBRIDGE"].WEBHOOK_BASE_URL.rstrip("/"))
    assert client.get(path).status_code == 200
    unknown = client.post("/admin/lobbies", data={"building": "Nowhere",
                                                  "csrf_token": csrf_token(client, "/admin/lobbies")})
    assert unknown.status_code == 302

    with app.app_context():
        [lobby] = displays.live_lobbies(db.session())
    assert lobby.building == "HQ" and lobby.created_by == "admin@example.com"
    client.post(f"/admin/lobbies/{lobby.id}/revoke", data={"csrf_token": csrf_token(client, "/admin/lobbies")})
    assert client.get(path).status_code == 404
    client.post("/signout", data={"csrf_token": csrf_token(client)})
    sign_in(client, "alice@example.com")  # not an admin
    assert client.get("/admin/lobbies").status_code == 403


def test_the_api_refuses_unknown_and_malformed_parameters(app, client):
    admin, _ = _seed(app)
    for query in ("start=2030-13-01", "start=", "colour=blue", f"{RANGE}&room=&x=1"):
        answer = client.get(f"/api/v1/insights?{query}", headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 422 and answer.json["error"] == "invalid", query

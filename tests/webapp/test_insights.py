"""The Insights page, its CSV and the JSON API agree; the lobby overview and its ETag poll."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from roombridge import api_tokens, db
from roombridge.models import ReservationStatus
from roombridge.unit_of_work import unit_of_work
from tests.factories import make_reservation, make_room
from tests.roombridge.test_insights import seed_known_week
from tests.webapp.signin import sign_in

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


def test_lobby_shows_free_and_busy_until_and_answers_304_when_unchanged(app, client):
    now = datetime.now(UTC)
    with app.app_context():
        session = db.session()
        with unit_of_work(session):
            busy = make_room(session, name="Busy room", building="HQ", time_zone="UTC")
            make_room(session, name="Free room", building="HQ", time_zone="UTC")
            make_room(session, name="Elsewhere", building="Annex")
            first = make_reservation(session, busy, now - timedelta(minutes=10), 40, title="Secret plan",
                                     status=ReservationStatus.CONFIRMED)
            make_reservation(session, busy, first.end_at, 30, status=ReservationStatus.CONFIRMED)
            until = (first.end_at + timedelta(minutes=30)).strftime("%H:%M")
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


def test_the_api_refuses_unknown_and_malformed_parameters(app, client):
    admin, _ = _seed(app)
    for query in ("start=2030-13-01", "start=", "colour=blue", f"{RANGE}&room=&x=1"):
        answer = client.get(f"/api/v1/insights?{query}", headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 422 and answer.json["error"] == "invalid", query

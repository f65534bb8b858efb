"""Calendar feeds: the link parses with icalendar, answers 304 when unchanged, shows private meetings
as Busy in a room's feed, includes Google bookings naming a person, and 404s once revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from icalendar import Calendar

from roombridge import db
from roombridge.models import ReservationSource, ReservationStatus, Room
from roombridge.unit_of_work import unit_of_work
from tests.factories import make_reservation, make_room
from tests.support import invoke_ok
from tests.webapp.signin import csrf_token, sign_in

SOON = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)


def _setup(app):
    with app.app_context():
        session = db.session()
        with unit_of_work(session):
            room = make_room(session, calendar_id="atlas@resource.calendar.google.com", name="Atlas")
            other = make_room(session, name="Borealis")
            make_reservation(session, room, SOON, title="Board meeting", private=True,
                             status=ReservationStatus.CONFIRMED, organiser_email="ceo@example.com")
            make_reservation(session, room, SOON + timedelta(hours=2), title="Standup",
                             organiser_email="alice@example.com", attendees=["bob@example.com"])
            make_reservation(session, other, SOON, title="Made in Google", source=ReservationSource.GOOGLE,
                             organiser_email="carol@example.com", attendees=["bob@example.com"],
                             google_event_id="evt123")
            make_reservation(session, other, SOON + timedelta(hours=3), title="Cancelled one",
                             organiser_email="bob@example.com", status=ReservationStatus.CANCELLED)
        return room.calendar_id


def _events(body: bytes) -> dict[str, object]:
    calendar = Calendar.from_ical(body)
    return {str(e.get("summary")): e for e in calendar.walk("VEVENT")}


def test_room_feed_parses_hides_private_titles_and_answers_304_when_unchanged(app, client, runner):
    room = _setup(app)
    url = invoke_ok(runner, ["feeds", "create", "--room", room]).output.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:5000/feeds/rbf_")
    path = url.removeprefix("http://127.0.0.1:5000")

    first = client.get(path)
    assert first.status_code == 200 and first.mimetype == "text/calendar"
    events = _events(first.data)
    assert set(events) == {"Busy", "Standup"}  # the private title never leaves; other rooms' not here
    assert str(events["Busy"].get("class")) == "PRIVATE"
    assert str(Calendar.from_ical(first.data).get("x-wr-calname")) == "Atlas"

    tag = first.headers["ETag"]
    again = client.get(path, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.data == b""

    # A change to the room's bookings changes the ETag: the client gets the new feed.
    with app.app_context():
        session = db.session()
        with unit_of_work(session):
            make_reservation(session, session.scalar(sa.select(Room).where(Room.name == "Atlas")),
                             SOON + timedelta(hours=5), title="Retro")
    changed = client.get(path, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and "Retro" in _events(changed.data)


def test_person_feed_holds_what_they_organise_or_attend_google_bookings_included(app, client, runner):
    _setup(app)
    url = invoke_ok(runner, ["feeds", "create", "--person", "Bob@Example.com"]).output.strip().splitlines()[-1]
    answer = client.get(url.removeprefix("http://127.0.0.1:5000"))
    events = _events(answer.data)
    assert set(events) == {"Standup", "Made in Google"}  # not the cancelled one, not others' meetings
    assert str(events["Made in Google"].get("uid")) == "evt123@google.com"
    assert str(events["Made in Google"].get("location")) == "Borealis"


def test_revoked_and_unknown_links_answer_404(app, client, runner):
    room = _setup(app)
    path = invoke_ok(runner, ["feeds", "create", "--room", room]).output.strip().splitlines()[-1]
    path = path.removeprefix("http://127.0.0.1:5000")
    assert client.get(path).status_code == 200
    assert "revoked 1" in invoke_ok(runner, ["feeds", "revoke", "--room", room]).output
    assert client.get(path).status_code == 404
    assert client.get("/feeds/rbf_nothing.ics").status_code == 404
    assert runner.invoke(args=["feeds", "revoke", "--room", room]).exit_code != 0  # nothing left to revoke
    assert runner.invoke(args=["feeds", "create"]).exit_code != 0  # neither --room nor --person


def test_a_person_makes_and_revokes_their_own_link_on_a_page(app, client):
    _setup(app)
    sign_in(client, "bob@example.com")
    page = client.post("/feeds", data={"csrf_token": csrf_token(client, "/feeds"), "action": "create"})
    html = page.get_data(as_text=True)
    link = html.split('id="new-link" type="text" readonly value="')[1].split('"')[0]
    assert link.startswith("http://localhost/feeds/rbf_")
    path = link.removeprefix("http://localhost")
    assert "Standup" in _events(client.get(path).data)
    client.post("/feeds", data={"csrf_token": csrf_token(client, "/feeds"), "action": "revoke"})
    assert client.get(path).status_code == 404


def test_room_feed_links_on_the_console_are_for_admins(app, client):
    _setup(app)
    sign_in(client, "alice@example.com")
    assert client.get("/admin/feeds").status_code == 403
    sign_in(client, "admin@example.com")
    page = client.get("/admin/feeds").get_data(as_text=True)
    assert "Atlas" in page
    with app.app_context():
        room_id = db.session().scalar(sa.select(Room.id).where(Room.name == "Atlas"))
    made = client.post(f"/admin/feeds/{room_id}", data={"csrf_token": csrf_token(client, "/admin/feeds"),
                                                         "action": "create"}).get_data(as_text=True)
    link = made.split('id="new-link" type="text" readonly value="')[1].split('"')[0]
    assert set(_events(client.get(link.removeprefix("http://localhost")).data)) == {"Busy", "Standup"}

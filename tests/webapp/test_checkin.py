"""Ways to check in over HTTP (the API, the pages, the invitation's signed link) and the room display."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
import sqlalchemy as sa

from roombridge import api_tokens, checkin, db, displays
from roombridge.models import AuditEntry, Reservation, ReservationSource, ReservationStatus, Room
from roombridge.unit_of_work import unit_of_work
from tests.factories import make_reservation, make_room
from tests.support import invoke_ok
from tests.webapp.signin import csrf_token, sign_in

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def rooms(app):
    """Two rooms that need a check-in, open all day (so 'now' is always bookable)."""
    with app.app_context(), unit_of_work(db.session()) as session:
        made = [make_room(session, name=name, checkin_required=True, bookable_hours="00:00-24:00")
                for name in ("Orion", "Vega")]
        return [room.id for room in made]


def _meeting(app, room_id: int, start: datetime, minutes: int = 60, **fields) -> int:
    with app.app_context(), unit_of_work(db.session()) as session:
        fields.setdefault("organiser_email", ALICE)
        fields.setdefault("attendees", [BOB])
        return make_reservation(session, session.get(Room, room_id), start, minutes,
                                status=ReservationStatus.CONFIRMED, **fields).id


def _get(app, reservation_id: int) -> Reservation:
    with app.app_context():
        return db.session().get(Reservation, reservation_id)


# --- the API ----------------------------------------------------------------------------------------


@pytest.fixture
def tokens(app):
    with app.app_context():
        return {who: api_tokens.create(db.session(), who).token for who in (ALICE, BOB, CAROL)}


def _check_in(client, tokens, who, reservation_id):
    return client.post(f"/api/v1/reservations/{reservation_id}/check-in",
                       headers={"Authorization": f"Bearer {tokens[who]}"})


def test_the_api_checks_in_inside_the_window_and_says_why_not_outside(app, client, rooms, tokens):
    now = _now()
    started = _meeting(app, rooms[0], now - timedelta(minutes=5))
    later = _meeting(app, rooms[0], now + timedelta(hours=2))
    spec = client.get("/api/v1/openapi.json").json
    described = spec["paths"]["/reservations/{reservation_id}/check-in"]["post"]["responses"]

    answer = _check_in(client, tokens, BOB, started)
    assert answer.status_code == 200
    assert (answer.json["checked_in_by"], answer.json["status"]) == (BOB, "confirmed")
    jsonschema.validate(answer.json, {**described["200"]["content"]["application/json"]["schema"],
                                      "components": spec["components"]})

    too_early = _check_in(client, tokens, ALICE, later)
    assert too_early.status_code == 409
    assert too_early.json["error"] == "wrong_state" and "Check-in opens at" in too_early.json["message"]
    stranger = _check_in(client, tokens, CAROL, started)
    assert (stranger.status_code, stranger.json["error"]) == (404, "not_found")
    assert set(described) >= {"200", "401", "404", "409"}


def test_a_released_reservation_says_so_in_the_api(app, client, rooms, tokens):
    rid = _meeting(app, rooms[0], _now() - timedelta(minutes=30))
    with app.app_context():
        assert checkin.apply_deadline(db.session(), app.config["ROOMBRIDGE"], rid) == "released"

    shown = client.get(f"/api/v1/reservations/{rid}", headers={"Authorization": f"Bearer {tokens[ALICE]}"}).json
    assert (shown["status"], shown["release_reason"], shown["checked_in_at"]) == ("released", "no_show", None)
    assert _check_in(client, tokens, ALICE, rid).status_code == 409


# --- the pages --------------------------------------------------------------------------------------


def test_the_reservation_page_and_my_reservations_offer_check_in_to_attendees(app, client, rooms):
    rid = _meeting(app, rooms[0], _now() - timedelta(minutes=5))
    sign_in(client, BOB)
    listed = client.get("/reservations").get_data(as_text=True)
    assert f'action="/reservations/{rid}/check-in"' in listed

    done = client.post(f"/reservations/{rid}/check-in", data={"csrf_token": csrf_token(client, "/reservations"),
                                                              "back": "list"})
    assert (done.status_code, done.location) == (302, "/reservations")
    assert _get(app, rid).checked_in_by == BOB
    page = client.get(f"/reservations/{rid}").get_data(as_text=True)
    assert "Checked in at" in page and f'action="/reservations/{rid}/check-in"' not in page
    assert f'action="/reservations/{rid}/end-early"' not in page  # an attendee may not end it


def test_the_organiser_ends_early_and_extends_from_the_reservation_page(app, client, rooms):
    start = _now() - timedelta(minutes=10)
    rid = _meeting(app, rooms[0], start)
    sign_in(client, ALICE)
    token = csrf_token(client, f"/reservations/{rid}")

    client.post(f"/reservations/{rid}/extend", data={"csrf_token": token, "minutes": "15"})
    assert _get(app, rid).end_at == start + timedelta(minutes=75)
    client.post(f"/reservations/{rid}/end-early", data={"csrf_token": token})
    ended = _get(app, rid)
    assert ended.end_at < start + timedelta(minutes=15) and ended.original_end_at == start + timedelta(minutes=75)


def test_the_page_of_a_google_booking_offers_end_now_but_no_extend(app, client, rooms):
    rid = _meeting(app, rooms[1], _now() - timedelta(minutes=5), source=ReservationSource.GOOGLE,
                   google_event_id="evgoogle1")
    sign_in(client, ALICE)
    html = client.get(f"/reservations/{rid}").get_data(as_text=True)
    assert "End now" in html and "Extend by" not in html and "Cancel reservation" not in html
    refused = client.post(f"/reservations/{rid}/extend", data={"minutes": "15",
                                                              "csrf_token": csrf_token(client, f"/reservations/{rid}")})
    assert _get(app, rid).end_at > _now() and refused.status_code in (302, 403)
    client.post(f"/reservations/{rid}/end-early", data={"csrf_token": csrf_token(client, f"/reservations/{rid}")})
    ended = _get(app, rid)
    assert ended.ended_early_at is not None and ended.status == ReservationStatus.CONFIRMED


def test_the_signed_mail_link_checks_in_with_one_click_until_the_deadline(app, client, rooms):
    rid = _meeting(app, rooms[0], _now() - timedelta(minutes=5))
    with app.app_context():
        reservation = db.session().get(Reservation, rid)
        url = checkin.link_url(app.config["ROOMBRIDGE"], reservation)
        assert checkin.reservation_of_link(app.config["ROOMBRIDGE"], url.rsplit("/", 1)[1],
                                           now=reservation.start_at + timedelta(minutes=16)) is None
    path = url.removeprefix(app.config["ROOMBRIDGE"].WEBHOOK_BASE_URL)

    shown = client.get(path)  # a mail scanner's GET checks nobody in
    assert shown.status_code == 200 and _get(app, rid).checked_in_at is None
    client.post(path, data={"csrf_token": csrf_token(client, path)})
    assert _get(app, rid).checked_in_by == "mail link"

    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert client.get(forged).status_code == 404


def test_the_mail_link_of_a_private_meeting_follows_the_one_private_rule(app, client, rooms):
    rid = _meeting(app, rooms[0], _now() - timedelta(minutes=5), title="Merger talks", private=True)
    with app.app_context():
        url = checkin.link_url(app.config["ROOMBRIDGE"], db.session().get(Reservation, rid))
    path = url.removeprefix(app.config["ROOMBRIDGE"].WEBHOOK_BASE_URL)
    # Whoever holds the link (it may be forwarded) sees "Busy", in the page and in its title ...
    text = client.get(path).get_data(as_text=True)
    assert "Merger talks" not in text and "<dd>Busy</dd>" in text and "Check in now" in text
    # ... and the organiser, signed in, sees what the meeting is (booking.may_see_details).
    sign_in(client, ALICE)
    assert "Merger talks" in client.get(path).get_data(as_text=True)


def test_the_invitation_mail_carries_the_link_when_the_room_needs_check_in(app, rooms):
    from roombridge.invitations import build_invitation

    rid = _meeting(app, rooms[0], _now() + timedelta(hours=1), google_event_id="abc")
    with app.app_context():
        reservation = db.session().get(Reservation, rid)
        link = checkin.link_url(app.config["ROOMBRIDGE"], reservation)
        text = build_invitation(reservation, "REQUEST", checkin_url=link).text
    assert link in text and "/check-in/" in link


# --- the room display -------------------------------------------------------------------------------


@pytest.fixture
def display(app, rooms):
    with app.app_context():
        room = db.session().get(Room, rooms[0])
        return "/display/" + displays.create(db.session(), room.calendar_id, actor="admin@example.com").token


def test_the_display_shows_its_room_and_polls_with_an_etag(app, client, rooms, display):
    now = _now()
    rid = _meeting(app, rooms[0], now - timedelta(minutes=5), 30, title="Design review")
    _meeting(app, rooms[0], now + timedelta(minutes=25), title="Secret", private=True)

    page = client.get(display)
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Orion" in text and "Design review" in text and "Secret" not in text
    assert page.headers["Referrer-Policy"] == "no-referrer" and "<script src=" in text and "<script>" not in text
    state = client.get(display + "/state.json")
    assert state.json["busy"] and state.json["current"]["reservation_id"] == rid
    assert [m["title"] for m in state.json["next"]] == ["Busy"]  # the door has no viewer: a private one is "Busy"
    again = client.get(display + "/state.json", headers={"If-None-Match": state.headers["ETag"]})
    assert (again.status_code, again.get_data()) == (304, b"")

    client.post(display + "/check-in", data={"reservation_id": rid})
    assert _get(app, rid).checked_in_by == "display"
    changed = client.get(display + "/state.json", headers={"If-None-Match": state.headers["ETag"]})
    assert changed.status_code == 200  # what the door shows has changed: the display reloads


def test_a_display_acts_only_for_its_own_room_and_reaches_no_other_page(app, client, rooms, display):
    theirs = _meeting(app, rooms[1], _now() - timedelta(minutes=5))

    for action in ("check-in", "end-early"):
        refused = client.post(f"{display}/{action}", data={"reservation_id": theirs})
        assert refused.status_code == 404
    assert _get(app, theirs).checked_in_at is None and _get(app, theirs).ended_early_at is None
    # The link is no sign-in: every other page still asks for one, and the API for a token.
    for path in ("/reservations", "/admin/", f"/reservations/{theirs}", "/"):
        assert client.get(path).status_code in (302, 401, 403), path
    assert client.get(f"/api/v1/reservations/{theirs}",
                      headers={"Authorization": f"Bearer {display.rsplit('/', 1)[1]}"}).status_code == 401
    assert client.get("/display/rd_" + "x" * 43).status_code == 404


def test_book_now_from_the_display_is_a_walk_up_booking_checked_in(app, client, rooms, display):
    client.post(display + "/book", data={"minutes": "30"})

    with app.app_context():
        [walk_up] = db.session().scalars(sa.select(Reservation)).all()
    assert (walk_up.source, walk_up.checked_in_by, walk_up.room_id) == (ReservationSource.DISPLAY, "display", rooms[0])
    assert walk_up.end_at - walk_up.start_at == timedelta(minutes=30)
    refused = client.post(display + "/book", data={"minutes": "15"})  # busy now
    assert refused.status_code == 409


def test_end_early_from_the_display(app, client, rooms, display):
    rid = _meeting(app, rooms[0], _now() - timedelta(minutes=20))

    assert client.post(display + "/end-early", data={"reservation_id": rid}).status_code == 303

    ended = _get(app, rid)
    assert ended.ended_early_at is not None and ended.end_at <= _now()
    assert not client.get(display + "/state.json").json["busy"]


def test_displays_cli_prints_the_url_and_a_revoked_link_answers_404(app, client, rooms, runner):
    with app.app_context():
        email = db.session().get(Room, rooms[1]).calendar_id
    url = invoke_ok(runner, ["displays", "create", email]).output.strip().splitlines()[-1]
    base = app.config["ROOMBRIDGE"].WEBHOOK_BASE_URL
    assert re.fullmatch(re.escape(base) + r"/display/rd_[A-Za-z0-9_-]{43}", url)
    path = url.removeprefix(base)
    assert client.get(path).status_code == 200

    invoke_ok(runner, ["displays", "revoke", email])

    assert client.get(path).status_code == 404
    assert client.get(path + "/state.json").status_code == 404
    with app.app_context():
        assert [e.action for e in db.session().scalars(sa.select(AuditEntry).order_by(AuditEntry.id))
                if e.action.startswith("display.")] == ["display.create", "display.revoke"]


def test_the_admin_console_makes_a_display_link_with_a_qr_code(app, client, rooms):
    sign_in(client, "admin@example.com")
    made = client.post(f"/admin/rooms/{rooms[0]}/displays",
                       data={"csrf_token": csrf_token(client, f"/admin/rooms/{rooms[0]}")})
    text = made.get_data(as_text=True)

    assert made.status_code == 200 and 'src="data:image/svg+xml' in text
    path = re.search(r'value="[^"]*(/display/rd_[^"]+)"', text).group(1)
    assert client.get(path).status_code == 200


def test_an_admin_sets_a_rooms_check_in_policy_and_empty_means_the_default(app, client, rooms):
    sign_in(client, "admin@example.com")
    token = csrf_token(client, f"/admin/rooms/{rooms[0]}")

    client.post(f"/admin/rooms/{rooms[0]}/checkin",
                data={"csrf_token": token, "required": "no", "opens": "5", "grace": "", "action": "flag"})
    with app.app_context():
        room = db.session().get(Room, rooms[0])
        policy = checkin.CheckinPolicy.for_room(room, app.config["ROOMBRIDGE"])
        assert (room.checkin_required, room.checkin_grace_minutes) == (False, None)
        assert (policy.required, policy.opens, policy.grace, policy.action.value) == (
            False, timedelta(minutes=5), timedelta(minutes=15), "flag")
    refused = client.post(f"/admin/rooms/{rooms[0]}/checkin", data={"csrf_token": token, "grace": "999"},
                          follow_redirects=True)
    assert "Between 0 and 240 minutes" in refused.get_data(as_text=True)
    sign_in(client, BOB)
    assert client.post(f"/admin/rooms/{rooms[0]}/checkin", data={"csrf_token": csrf_token(client), "required": "yes"}
                       ).status_code == 403

"""The booking pages through the Flask test client: finder, form errors, ownership, CSRF, query counts."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from roombridge import booking, db
from roombridge.models import Reservation, ReservationSource, ReservationStatus, Room
from tests.factories import make_reservation, make_room
from tests.support import counting_statements
from tests.webapp.signin import csrf_token, sign_in
from webapp.pages import day_segments

LONDON = ZoneInfo("Europe/London")
DAY = date.today() + timedelta(days=3)


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime.combine(day, time(hour, minute), LONDON).astimezone(UTC)


def _add(app, room_id, start, end, **fields):
    with app.app_context():
        session = db.session()
        room = session.get(Room, room_id)
        reservation = make_reservation(session, room, start=start, end_at=end, **fields)
        session.commit()
        return reservation.id


def _book_form(room_id, **overrides):
    return {"room_id": str(room_id), "title": "Design review", "date": DAY.isoformat(), "start": "10:00",
            "end": "11:00", "attendees": "bob@example.com", "description": "", "repeat": "none", **overrides}


def _error_of(html: str, field: str) -> str:
    match = re.search(rf'<div class="field-error" id="{field}-error">(.*?)</div>', html, re.S)
    assert match, f"no error shown by {field}"
    return re.sub(r"<[^>]+>", " ", match.group(1))


# --- the room finder ---------------------------------------------------------------------------


def test_finder_shows_free_and_busy_rooms_with_their_day(client, app, rooms):
    _add(app, rooms["atlas"], at(10), at(11), title="Board meeting", source=ReservationSource.GOOGLE,
         organiser_email="carol@example.com", status=ReservationStatus.CONFIRMED)
    sign_in(client)
    page = client.get(f"/?date={DAY.isoformat()}&start=10:30&end=11:30").get_data(as_text=True)
    assert "1 of 2 rooms free" in page
    assert "Busy: Board meeting (Google)" in page
    assert "10:00–11:00" in page  # shown in the room's zone, whatever UTC says
    assert f"/book?room_id={rooms['cygnus']}" in page
    # Atlas is not offered at the asked time, only when it is next free.
    assert f"/book?room_id={rooms['atlas']}&amp;date={DAY.isoformat()}&amp;start=10:30" not in page
    assert "Next free at 11:00" in page

    filtered = client.get(f"/?date={DAY.isoformat()}&start=12:00&end=13:00&people=10").get_data(as_text=True)
    assert "1 of 1 room free" in filtered and "Cygnus" not in filtered
    by_feature = client.get(f"/?date={DAY.isoformat()}&start=12:00&end=13:00&features=whiteboard")
    assert "Atlas" not in by_feature.get_data(as_text=True)


def test_finder_reports_bad_input_by_its_field(client, rooms):
    sign_in(client)
    page = client.get("/?date=someday&start=10:00&end=09:00&people=-2").get_data(as_text=True)
    assert "Enter a date as YYYY-MM-DD." in page
    assert "Enter a number of people" in page


def test_day_segments_cover_the_bookable_hours_and_keep_bookings_outside_them():
    busy = [booking.Busy(at(6), at(7, 30), 1, "Early", ReservationSource.GOOGLE, "a@example.com"),
            booking.Busy(at(12), at(13), 2, "Lunch", ReservationSource.WEB, "a@example.com")]
    segments = day_segments(busy, DAY, LONDON, "07:00-20:00")
    shown = [(s.start.strftime("%H:%M"), s.end.strftime("%H:%M"), s.busy.title if s.busy else None) for s in segments]
    assert shown == [("06:00", "07:30", "Early"), ("07:30", "12:00", None), ("12:00", "13:00", "Lunch"),
                     ("13:00", "20:00", None)]


# --- booking -----------------------------------------------------------------------------------


def test_booking_shows_its_state_and_the_status_poll(client, app, rooms):
    sign_in(client)
    response = client.post("/book", data={**_book_form(rooms["cygnus"]), "csrf_token": csrf_token(client, "/book")})
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Waiting for Google" in page and "status.js" in page
    reservation_id = int(response.headers["Location"].rsplit("/", 1)[1])
    with app.app_context():
        stored = db.session().get(Reservation, reservation_id)
        assert stored.organiser_email == "alice@example.com" and stored.attendees == ["bob@example.com"]
        assert stored.start_at == at(10) and stored.source == ReservationSource.WEB
        stored.status, stored.status_reason = ReservationStatus.FAILED, "requiredAccessLevel"
        db.session().commit()
    status = client.get(f"/reservations/{reservation_id}/status.json").get_json()
    assert status["status"] == "failed" and status["final"] is True
    assert "requiredAccessLevel" in status["explanation"]


def test_bad_input_is_shown_by_its_field_and_the_form_keeps_what_was_typed(client, rooms):
    sign_in(client)
    response = client.post("/book", data={
        **_book_form(rooms["cygnus"], title="", end="09:00", attendees="bob@example.com, not-an-address"),
        "csrf_token": csrf_token(client, "/book")})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "The end must be after the start." in _error_of(page, "end")
    assert "Enter a title." in _error_of(page, "title")  # every message at once, not one per try
    assert 'value="09:00"' in page and "not-an-address" in page

    response = client.post("/book", data={**_book_form(rooms["cygnus"], title="", attendees="not-an-address"),
                                          "csrf_token": csrf_token(client, "/book")})
    page = response.get_data(as_text=True)
    assert _error_of(page, "title").strip()
    assert "not-an-address" in _error_of(page, "attendees")
    assert 'aria-invalid="true"' in page and 'aria-describedby="title-error"' in page


def test_a_clash_is_shown_by_the_start_field(client, app, rooms):
    _add(app, rooms["cygnus"], at(10, 30), at(11, 30), title="Standup", status=ReservationStatus.CONFIRMED)
    sign_in(client)
    response = client.post("/book", data={**_book_form(rooms["cygnus"]), "csrf_token": csrf_token(client, "/book")})
    assert response.status_code == 409
    assert "already booked" in _error_of(response.get_data(as_text=True), "start")
    assert "10:30–11:30" in _error_of(response.get_data(as_text=True), "start")


def _book_series(client, app, rooms, repeat: str) -> list[Reservation]:
    """Book three occurrences from the booking form; the stored reservations, soonest first."""
    sign_in(client)
    response = client.post("/book", data={**_book_form(rooms["atlas"], repeat=repeat, repeat_count="3"),
                                          "csrf_token": csrf_token(client, "/book")})
    assert response.status_code == 302
    with app.app_context():
        return db.session().scalars(sa.select(Reservation).order_by(Reservation.start_at)).all()


def test_repeat_options_book_a_series(client, app, rooms):
    starts = [r.start_at for r in _book_series(client, app, rooms, "daily")]
    assert starts == [at(10, day=DAY + timedelta(days=n)) for n in range(3)]


def test_forms_without_a_csrf_token_are_refused(client, app, rooms):
    sign_in(client)
    response = client.post("/book", data=_book_form(rooms["cygnus"]))
    assert response.status_code == 400
    reservation_id = _add(app, rooms["atlas"], at(14), at(15))
    assert client.post(f"/reservations/{reservation_id}/cancel").status_code == 400
    with app.app_context():
        assert db.session().scalar(sa.select(sa.func.count()).select_from(Reservation)) == 1
        assert db.session().get(Reservation, reservation_id).status == ReservationStatus.PENDING


# --- ownership ---------------------------------------------------------------------------------


def test_one_user_cannot_see_edit_or_cancel_anothers_reservation(client, app, rooms):
    theirs = _add(app, rooms["atlas"], at(14), at(15), organiser_email="carol@example.com", title="Carol's")
    sign_in(client, "alice@example.com")
    token = csrf_token(client, "/")
    assert client.get(f"/reservations/{theirs}").status_code == 404
    assert client.get(f"/reservations/{theirs}/status.json").status_code == 404
    assert client.get(f"/reservations/{theirs}/edit").status_code == 404
    assert client.post(f"/reservations/{theirs}/edit", data={**_book_form(rooms["atlas"], title="Mine now"),
                                                             "csrf_token": token}).status_code == 404
    assert client.post(f"/reservations/{theirs}/cancel", data={"csrf_token": token}).status_code == 404
    with app.app_context():
        stored = db.session().get(Reservation, theirs)
        assert stored.title == "Carol's" and stored.status == ReservationStatus.PENDING


def test_an_attendee_may_see_but_not_change(client, app, rooms):
    theirs = _add(app, rooms["atlas"], at(14), at(15), organiser_email="carol@example.com",
                  attendees=["alice@example.com"])
    sign_in(client, "alice@example.com")
    token = csrf_token(client, "/")
    assert client.get(f"/reservations/{theirs}").status_code == 200
    assert client.post(f"/reservations/{theirs}/cancel", data={"csrf_token": token}).status_code == 403
    assert client.post(f"/reservations/{theirs}/edit", data={**_book_form(rooms["atlas"]),
                                                             "csrf_token": token}).status_code == 403


def test_edit_and_cancel_own_reservation(client, app, rooms):
    sign_in(client)
    mine = _add(app, rooms["atlas"], at(14), at(15), source=ReservationSource.WEB)
    edit_page = client.get(f"/reservations/{mine}/edit").get_data(as_text=True)
    assert 'value="14:00"' in edit_page and 'value="Planning"' in edit_page
    response = client.post(f"/reservations/{mine}/edit", data={
        **_book_form(rooms["atlas"], title="Planning, longer", start="14:00", end="16:00"),
        "csrf_token": csrf_token(client, "/")})
    assert response.status_code == 302
    confirm = client.get(f"/reservations/{mine}/cancel").get_data(as_text=True)
    assert "Cancel this reservation?" in confirm
    assert client.post(f"/reservations/{mine}/cancel", data={"csrf_token": csrf_token(client, "/")}).status_code == 302
    with app.app_context():
        stored = db.session().get(Reservation, mine)
        assert stored.title == "Planning, longer" and stored.end_at == at(16)
        assert stored.status == ReservationStatus.CANCELLED


def test_edit_and_cancel_forms_offer_the_scope_for_a_series_occurrence(client, app, rooms):
    ids = [r.id for r in _book_series(client, app, rooms, "weekly")]
    single = _add(app, rooms["cygnus"], at(14), at(15), source=ReservationSource.WEB)
    assert 'name="scope"' not in client.get(f"/reservations/{single}/edit").get_data(as_text=True)
    assert "Every week on" in client.get(f"/reservations/{ids[1]}").get_data(as_text=True)
    edit_page = client.get(f"/reservations/{ids[1]}/edit").get_data(as_text=True)
    assert 'value="following"' in edit_page and 'value="all"' in edit_page
    assert 'name="scope"' in client.get(f"/reservations/{ids[1]}/cancel").get_data(as_text=True)

    response = client.post(f"/reservations/{ids[1]}/edit", data={
        **_book_form(rooms["atlas"], title="Renamed from here"), "date": (DAY + timedelta(weeks=1)).isoformat(),
        "scope": "following", "csrf_token": csrf_token(client, "/")})
    assert response.status_code == 302
    response = client.post(f"/reservations/{ids[2]}/cancel", data={"scope": "this",
                                                                  "csrf_token": csrf_token(client, "/")})
    assert response.status_code == 302
    with app.app_context():
        found = [db.session().get(Reservation, i) for i in ids]
        assert [r.title for r in found] == ["Design review", "Renamed from here", "Renamed from here"]
        assert [r.status for r in found] == [ReservationStatus.PENDING, ReservationStatus.PENDING,
                                             ReservationStatus.CANCELLED]


def test_my_reservations_lists_upcoming_past_and_google_ones(client, app, rooms):
    _add(app, rooms["atlas"], at(9), at(10), title="Made here", source=ReservationSource.WEB)
    _add(app, rooms["cygnus"], at(9), at(10), title="Made in Google", source=ReservationSource.GOOGLE,
         status=ReservationStatus.CONFIRMED)
    yesterday = date.today() - timedelta(days=2)
    _add(app, rooms["atlas"], at(9, day=yesterday), at(10, day=yesterday), title="Long ago")
    _add(app, rooms["atlas"], at(11), at(12), title="Someone else's", organiser_email="bob@example.com")
    sign_in(client)
    page = client.get("/reservations").get_data(as_text=True)
    upcoming, past = page.split('id="past-heading"')
    assert "Made here" in upcoming and "Made in Google" in upcoming and "Long ago" in past
    assert "Someone else" not in page


# --- no query per row ---------------------------------------------------------------------------


def _statements_for(client, app, path):
    with counting_statements(app) as statements:
        assert client.get(path).status_code == 200
    return len(statements)


def test_pages_make_a_fixed_number_of_queries(client, app):
    sign_in(client)
    with app.app_context():
        session = db.session()
        first = [make_room(session, name=f"Room {n}") for n in range(2)]
        session.commit()
    for n, room in enumerate(first):
        _add(app, room.id, at(8 + n), at(9 + n), source=ReservationSource.WEB)
    small = {path: _statements_for(client, app, path)
             for path in (f"/?date={DAY}", "/reservations", f"/grid?date={DAY}", "/free-now")}

    with app.app_context():
        session = db.session()
        more = [make_room(session, name=f"More {n}") for n in range(15)]
        session.commit()
    for n, room in enumerate(more):
        _add(app, room.id, at(8 + n % 10), at(9 + n % 10), source=ReservationSource.WEB)
        past_day = date.today() - timedelta(days=1 + n)
        _add(app, room.id, at(8, day=past_day), at(9, day=past_day))
    large = {path: _statements_for(client, app, path) for path in small}
    assert large == small


# --- who sees what: an address is matched whole, never as a LIKE pattern ------------------------------


def test_my_reservations_match_an_attendee_address_exactly(client, app, rooms, monkeypatch):
    from webapp import auth

    monkeypatch.setattr(auth, "DEMO_ACCOUNTS", (*auth.DEMO_ACCOUNTS, ("john_smith@example.com", "John Smith")))
    # "_" is LIKE's any-character: john_smith must not see john.smith's meeting.
    _add(app, rooms["atlas"], at(9), at(10), title="For John Smith", organiser_email="carol@example.com",
         attendees=["john.smith@example.com"])
    _add(app, rooms["cygnus"], at(9), at(10), title="John's own invitation", organiser_email="carol@example.com",
         attendees=["bob@example.com", "john_smith@example.com"])
    sign_in(client, "john_smith@example.com")
    page = client.get("/reservations").get_data(as_text=True)
    assert "John&#39;s own invitation" in page or "John's own invitation" in page
    assert "For John Smith" not in page


# --- the rate limit on booking writes ---------------------------------------------------------------


def test_booking_faster_than_the_rate_limit_gets_a_page_saying_when_to_retry(make_app):
    app = make_app(BOOKING_WRITES_PER_MINUTE=3)
    with app.app_context():
        room_id = make_room(db.session(), name="Atlas").id
        db.session().commit()
    client = app.test_client()
    sign_in(client, "alice@example.com")
    token = csrf_token(client, "/")
    statuses = []
    for hour in range(9, 14):  # as fast as a script can
        answer = client.post("/book", data={**_book_form(room_id, start=f"{hour:02}:00", end=f"{hour:02}:30"),
                                            "csrf_token": token})
        statuses.append(answer.status_code)
    assert statuses == [302, 302, 302, 429, 429]
    assert 0 < int(answer.headers["Retry-After"]) <= 60
    page = answer.get_data(as_text=True)
    assert "Too many changes" in page and "more than 3 per minute" in page
    with app.app_context():
        assert db.session().scalar(sa.select(sa.func.count(Reservation.id))) == 3
        from roombridge.booking import quotas

        assert [(h["email"], h["limit"]) for h in quotas.recent_hits()][0] == (
            "alice@example.com", "booking writes per minute")

    admin = app.test_client()  # admins are exempt
    sign_in(admin, "admin@example.com")
    admin_token = csrf_token(admin, "/")
    for hour in range(14, 19):
        assert admin.post("/book", data={**_book_form(room_id, start=f"{hour:02}:00", end=f"{hour:02}:30"),
                                         "csrf_token": admin_token}).status_code == 302


@pytest.mark.parametrize("path", [
    "/reservations/9223372036854775808", "/reservations/9223372036854775808/edit",
    "/reservations/9223372036854775808/status.json", "/rooms/9223372036854775808",
    "/admin/rooms/9223372036854775808", "/admin/rooms/9223372036854775808/status.json",
])
def test_ids_past_the_database_integer_are_no_such_page_not_a_500(client, path):
    # SQLite's driver raised OverflowError for ids >= 2**63 (a 500); the route's id converter bounds them.
    sign_in(client, "admin@example.com")
    assert client.get(path).status_code == 404

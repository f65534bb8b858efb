"""Finder, free now, grid and week, favourites, suggestions, My reservations: through the test client."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from roombridge import db
from roombridge.models import Reservation, ReservationSource, ReservationStatus, Room
from tests.factories import make_reservation, make_room
from tests.support import zone_at_midday
from tests.webapp.signin import csrf_token, sign_in

LONDON = ZoneInfo("Europe/London")
DAY = date.today() + timedelta(days=3)


def at(hour: int, minute: int = 0, day: date = DAY, zone: ZoneInfo = LONDON) -> datetime:
    return datetime.combine(day, time(hour, minute), zone).astimezone(UTC)


def _add(app, room_id, start, end, **fields):
    with app.app_context():
        session = db.session()
        reservation = make_reservation(session, session.get(Room, room_id), start=start, end_at=end,
                                       status=fields.pop("status", ReservationStatus.CONFIRMED), **fields)
        session.commit()
        return reservation.id


def _forms(page: str, action: str) -> list[dict[str, str]]:
    """The hidden fields of every POST form to `action` on the page, as a browser would send them."""
    found = []
    for body in re.findall(rf'<form method="post" action="{re.escape(action)}"[^>]*>(.*?)</form>', page, re.S):
        found.append({name: html.unescape(value) for name, value in
                      re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body)})
    return found


# --- the finder's truth ----------------------------------------------------------------------------


@pytest.mark.parametrize(("day", "start", "end", "reason"), [
    (date.today(), "21:00", "22:00", "can be booked between 07:00-20:00"),
    (date.today() - timedelta(days=1), "10:00", "11:00", "The start is in the past."),
    (DAY, "07:00", "19:30", "may last at most 8 h"),
])
def test_the_finder_says_why_and_never_offers_book_for_what_booking_refuses(client, rooms, day, start, end, reason):
    sign_in(client)
    page = client.get(f"/?date={day.isoformat()}&start={start}&end={end}").get_data(as_text=True)
    assert "0 of 2 rooms free" in page
    assert page.count(reason) == 2 and page.count("Not bookable then:") == 2
    assert not re.search(rf'href="/book\?[^"]*start={start}&amp;end={end}"', page)  # no "Book" for it, in any room

    # What the finder refused, the form refuses with the same words.
    response = client.post("/book", data={"room_id": str(rooms["atlas"]), "title": "Try", "date": day.isoformat(),
                                          "start": start, "end": end, "repeat": "none",
                                          "csrf_token": csrf_token(client, "/book")})
    assert response.status_code == 422 and reason in response.get_data(as_text=True)


def test_a_bookable_slot_is_offered_and_books(client, rooms):
    sign_in(client)
    page = client.get(f"/?date={DAY.isoformat()}&start=10:00&end=11:00").get_data(as_text=True)
    assert "2 of 2 rooms free" in page and "Not bookable" not in page
    assert f"/book?room_id={rooms['atlas']}&amp;date={DAY.isoformat()}&amp;start=10:00&amp;end=11:00" in page


def test_a_clash_at_booking_time_offers_nearest_times_and_rooms_that_fit_one_click_each(client, app, rooms):
    with app.app_context():
        session = db.session()
        lyra = make_room(session, name="Lyra", capacity=6, building="HQ", features=["whiteboard", "display"]).id
        make_room(session, name="Annex room", capacity=6, building="Annex", features=["whiteboard"])
        session.commit()
    _add(app, rooms["cygnus"], at(10, 30), at(11, 30), title="Standup")
    sign_in(client)
    response = client.post("/book", data={"room_id": str(rooms["cygnus"]), "title": "Design review",
                                          "date": DAY.isoformat(), "start": "10:00", "end": "11:00",
                                          "attendees": "bob@example.com", "repeat": "none",
                                          "csrf_token": csrf_token(client, "/book")})
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    offers = _forms(page, "/book")
    # The nearest free hours in Cygnus, then Lyra (same building, seats two, has a whiteboard) at the asked time.
    assert [(o["room_id"], o["start"], o["end"]) for o in offers] == [
        (str(rooms["cygnus"]), "09:15", "10:15"), (str(rooms["cygnus"]), "09:30", "10:30"),
        (str(rooms["cygnus"]), "11:30", "12:30"), (str(lyra), "10:00", "11:00")]
    assert "Book Annex room" not in page and "Book Lyra, 10:00–11:00" in page
    assert all(o["title"] == "Design review" and o["attendees"] == "bob@example.com" for o in offers)

    booked = client.post("/book", data=offers[-1])
    assert booked.status_code == 302
    with app.app_context():
        made = db.session().scalar(sa.select(Reservation).where(Reservation.title == "Design review"))
        assert (made.room_id, made.start_at) == (lyra, at(10))


def test_free_now_lists_rooms_free_from_now_and_books_in_one_click(client, app):
    with app.app_context():
        session = db.session()
        here = make_room(session, name="Here", time_zone=zone_at_midday()).id
        make_room(session, name="Needs notice", time_zone=zone_at_midday(), min_notice_minutes=120)
        taken = make_room(session, name="Taken", time_zone=zone_at_midday()).id
        session.commit()
    now = datetime.now(UTC)
    _add(app, taken, now - timedelta(minutes=10), now + timedelta(minutes=20))
    sign_in(client)
    page = client.get("/free-now?minutes=60").get_data(as_text=True)
    assert "1 room free for 60 minutes from now" in page
    assert "Book Here now" in page and "Needs notice" not in page and "Book Taken now" not in page
    [offer] = _forms(page, "/book")
    assert offer["room_id"] == str(here)
    response = client.post("/book", data=offer)
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.app_context():
        made = db.session().scalar(sa.select(Reservation).where(Reservation.room_id == here))
        assert made.end_at - made.start_at == timedelta(minutes=60) and made.start_at > now


# --- the grid and the week ------------------------------------------------------------------------


def test_the_grid_is_a_table_of_rooms_by_hour_with_busy_blocks_and_free_gaps_to_book(client, app, rooms):
    _add(app, rooms["atlas"], at(10), at(11), title="Board meeting", organiser_email="carol@example.com")
    _add(app, rooms["cygnus"], at(14), at(15), title="Salary review", organiser_email="carol@example.com",
         private=True)
    sign_in(client)
    page = client.get(f"/grid?date={DAY.isoformat()}").get_data(as_text=True)
    assert re.search(r'<th scope="col"\s*>07:00</th>', page) and re.search(r'<th scope="col"\s*>19:00</th>', page)
    assert re.search(r'<th scope="row"><a href="[^"]+">Atlas</a></th>', page)
    assert "Busy: Board meeting" in page
    assert "Salary review" not in page and ">Busy<span" in page  # private: Busy to everyone else
    assert f"/book?room_id={rooms['atlas']}&amp;date={DAY.isoformat()}&amp;start=11:00&amp;end=12:00" in page
    assert f"/book?room_id={rooms['atlas']}&amp;date={DAY.isoformat()}&amp;start=10:00" not in page  # busy then

    client.post("/signout", data={"csrf_token": csrf_token(client, "/")})
    sign_in(client, "carol@example.com")
    assert "Busy: Salary review" in client.get(f"/grid?date={DAY.isoformat()}").get_data(as_text=True)


def test_the_grid_marks_the_current_hour_and_offers_nothing_past(client, app):
    zone = ZoneInfo(zone_at_midday())
    with app.app_context():
        room = make_room(db.session(), name="Here", time_zone=zone.key, bookable_hours="08:00-18:00").id
        db.session().commit()
    sign_in(client)
    today = datetime.now(UTC).astimezone(zone).date()
    page = client.get(f"/grid?date={today.isoformat()}").get_data(as_text=True)
    assert 'aria-current="time">12:00' in page
    assert f"room_id={room}&amp;date={today.isoformat()}&amp;start=08:00" not in page
    assert f"room_id={room}&amp;date={today.isoformat()}&amp;start=13:00&amp;end=14:00" in page


def test_the_week_of_one_room(client, app, rooms):
    _add(app, rooms["atlas"], at(10), at(11), title="Board meeting")
    sign_in(client)
    page = client.get(f"/rooms/{rooms['atlas']}/week?date={DAY.isoformat()}").get_data(as_text=True)
    monday = DAY - timedelta(days=DAY.weekday())
    assert page.count('<th scope="row">') == 7 and f"{monday:%a %d %b}" in page
    assert "Busy: Board meeting" in page
    assert client.get("/rooms/9999/week").status_code == 404


# --- favourites, suggestions -------------------------------------------------------------------------


def _order(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="room card[^"]*" data-room-id="(\d+)"', page)]


def test_favourite_rooms_come_first_in_the_finder(client, rooms):
    sign_in(client)
    finder = f"/?date={DAY.isoformat()}&start=10:00&end=11:00"
    assert _order(client.get(finder).get_data(as_text=True)) == [rooms["cygnus"], rooms["atlas"]]  # smaller first
    response = client.post(f"/rooms/{rooms['atlas']}/favourite",
                           data={"favourite": "1", "next": finder, "csrf_token": csrf_token(client, "/")})
    assert response.status_code == 302 and response.headers["Location"] == finder
    page = client.get(finder).get_data(as_text=True)
    assert _order(page) == [rooms["atlas"], rooms["cygnus"]] and "Remove Atlas from favourites" in page
    elsewhere = client.post(f"/rooms/{rooms['atlas']}/favourite",
                            data={"favourite": "0", "next": "//evil.example/", "csrf_token": csrf_token(client, "/")})
    assert elsewhere.headers["Location"] == "/"  # never an open redirect


def test_attendee_suggestions_for_signed_in_people_only(client, app, rooms):
    assert client.get("/people.json?q=bo").status_code in (302, 401)
    sign_in(client, "bob@example.com")
    client.post("/signout", data={"csrf_token": csrf_token(client, "/")})
    sign_in(client)
    found = client.get("/people.json?q=bo")
    assert found.headers["Content-Type"].startswith("application/json")
    assert [p["email"] for p in found.get_json()] == ["bob@example.com"]
    page = client.get("/book").get_data(as_text=True)
    assert 'list="attendee-suggestions"' in page and "attendees.js" in page


# --- My reservations ------------------------------------------------------------------------------


def test_my_reservations_are_grouped_by_day_with_a_series_as_one_row(client, app, rooms):
    for n in range(3):
        _add(app, rooms["atlas"], at(9, day=DAY + timedelta(days=7 * n)), at(10, day=DAY + timedelta(days=7 * n)),
             title="Weekly", series_id="s-1", source=ReservationSource.WEB)
    _add(app, rooms["cygnus"], at(14), at(15), title="One-off", source=ReservationSource.WEB)
    sign_in(client)
    page = client.get("/reservations").get_data(as_text=True)
    upcoming = page.split('id="past-heading"')[0]
    assert upcoming.count('<li class="booking"') == 2
    assert upcoming.count(f">{DAY:%A %d %B %Y}</h3>") == 1
    assert "Repeats: 3 occurrences" in upcoming

"""Limits per person, without HTTP: whom one may invite, how many, what one may hold, how many mails an hour;
and text that would break a mail header or a calendar line."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session as OrmSession

from roombridge import booking, db
from roombridge.booking import quotas
from roombridge.models import Reservation, Room
from tests.factories import make_reservation, make_room

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
MONDAY = date(2030, 1, 7)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=LONDON)


def book(app, room_id, start, end, **fields):
    organiser = fields.pop("organiser_email", "alice@example.com")
    request = booking.BookingRequest(room_id=room_id, organiser_email=organiser, title=fields.pop("title", "Planning"),
                                     start=start, end=end, **fields)
    return booking.book(db.session(), app.config["ROOMBRIDGE"], request, now=NOW)


@pytest.fixture
def limited(make_app):
    """An app with small limits; yields (app, room id, other room id) inside its app context."""
    def make(**settings):
        app = make_app(ALLOWED_DOMAINS="example.com", **settings)
        context = app.app_context()
        context.push()
        session = db.session()
        rooms = make_room(session, name="Orion"), make_room(session, name="Vega")
        session.commit()
        made.append(context)
        return app, rooms[0].id, rooms[1].id

    made = []
    yield make
    for context in made:
        context.pop()


def stored_count() -> int:
    return db.session().scalar(sa.select(sa.func.count(Reservation.id)))


# --- whom, and how many, a booking may invite -----------------------------------------------------


def test_two_hundred_and_one_outside_recipients_are_refused_and_nothing_is_stored(limited):
    app, room_id, _ = limited()
    outsiders = [f"target{i}@elsewhere.org" for i in range(201)]
    with pytest.raises(booking.InvalidBooking) as refused:
        book(app, room_id, at(MONDAY, 10), at(MONDAY, 11), attendees=outsiders)
    [domains, count] = refused.value.errors["attendees"]
    assert domains.startswith("Only people of example.com can be invited, not target0@elsewhere.org, ")
    assert count == "At most 50 attendees."
    assert stored_count() == 0


def test_attendees_keep_to_their_own_domains_and_their_number(limited):
    app, room_id, _ = limited(ATTENDEE_DOMAINS="example.com, partner.org", MAX_ATTENDEES=3)
    made = book(app, room_id, at(MONDAY, 10), at(MONDAY, 11), attendees=["bob@example.com", "eve@partner.org"])
    assert made.reservations[0].attendees == ["bob@example.com", "eve@partner.org"]
    with pytest.raises(booking.InvalidBooking) as refused:
        book(app, room_id, at(MONDAY, 12), at(MONDAY, 13), attendees=["x@elsewhere.org"])
    assert "not x@elsewhere.org" in refused.value.errors["attendees"][0]
    with pytest.raises(booking.InvalidBooking) as refused:
        booking.edit(db.session(), app.config["ROOMBRIDGE"], made.reservations[0].id, actor_email="alice@example.com",
                     actor_is_admin=False, attendees=[f"p{i}@example.com" for i in range(4)], now=NOW)
    assert refused.value.errors == {"attendees": ["At most 3 attendees."]}
    with pytest.raises(booking.InvalidBooking) as refused:  # a huge list is refused without checking each
        book(app, room_id, at(MONDAY, 12), at(MONDAY, 13), attendees=["not an address"] * 31)
    assert refused.value.errors == {"attendees": ["At most 3 attendees."]}


# --- titles and descriptions ------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["Planning\nBcc: all@example.com", "Planning\r", "Tab\there", "Esc\x1b[31m",
                                   "Next line\x85", "Line\u2028separator", "Para\u2029graph", "Del\x7f"])
def test_control_characters_in_a_title_are_refused_when_booking_and_editing(limited, title):
    app, room_id, _ = limited()
    with pytest.raises(booking.InvalidBooking) as refused:
        book(app, room_id, at(MONDAY, 10), at(MONDAY, 11), title=title)
    assert refused.value.errors == {"title": [booking.rules.NO_CONTROL_CHARACTERS]}
    made = book(app, room_id, at(MONDAY, 10), at(MONDAY, 11)).reservations[0]
    with pytest.raises(booking.InvalidBooking):
        booking.edit(db.session(), app.config["ROOMBRIDGE"], made.id, actor_email="alice@example.com",
                     actor_is_admin=False, title=title, now=NOW)
    assert db.session().get(Reservation, made.id).title == "Planning"


def test_a_description_keeps_its_lines_and_tabs_and_refuses_other_controls(limited):
    app, room_id, _ = limited()
    made = book(app, room_id, at(MONDAY, 10), at(MONDAY, 11), description="1.\tbudget\r\n2.\thiring\r3.")
    assert made.reservations[0].description == "1.\tbudget\n2.\thiring\n3."
    for bad in ("page\x0cbreak", "bell\x07", "sep\u2028"):
        with pytest.raises(booking.InvalidBooking) as refused:
            book(app, room_id, at(MONDAY, 12), at(MONDAY, 13), description=bad)
        assert list(refused.value.errors) == ["description"]


def test_a_room_name_is_one_line_too():
    clean, errors = booking.rules.check_room_fields({"name": "Orion\nVega"})
    assert errors == {"name": [booking.rules.NO_CONTROL_CHARACTERS]}


# --- what one person may hold ------------------------------------------------------------------------


def test_live_reservations_are_capped_per_person_and_admins_are_exempt(limited):
    app, room_id, other_room_id = limited(MAX_LIVE_RESERVATIONS=2)
    ended = make_reservation(db.session(), db.session().get(Room, room_id), NOW - timedelta(days=2))
    db.session().commit()
    assert ended.end_at < NOW  # what has ended does not count
    book(app, room_id, at(MONDAY, 10), at(MONDAY, 11))
    book(app, other_room_id, at(MONDAY, 10), at(MONDAY, 11))
    with pytest.raises(quotas.QuotaExceeded) as refused:
        book(app, room_id, at(MONDAY, 12), at(MONDAY, 13))
    assert refused.value.errors["form"][0].startswith("You may hold at most 2 reservations that have not ended")
    with pytest.raises(quotas.QuotaExceeded):  # a series counts each occurrence
        book(app, room_id, at(MONDAY, 14), at(MONDAY, 15), organiser_email="bob@example.com",
             recurrence=booking.Recurrence(frequency="daily", count=3))
    book(app, room_id, at(MONDAY, 12), at(MONDAY, 13), organiser_email="admin@example.com")
    book(app, room_id, at(MONDAY, 14), at(MONDAY, 15), organiser_email="admin@example.com")
    book(app, room_id, at(MONDAY, 16), at(MONDAY, 17), organiser_email="admin@example.com")
    assert [hit["email"] for hit in quotas.recent_hits()] == ["bob@example.com", "alice@example.com"]
    assert quotas.recent_hits()[0]["limit"] == "live reservations"


def test_booked_hours_are_capped_per_room_per_week(limited):
    app, room_id, other_room_id = limited(MAX_HOURS_PER_ROOM_PER_WEEK=3)
    first = book(app, room_id, at(MONDAY, 9), at(MONDAY, 11)).reservations[0]
    with pytest.raises(quotas.QuotaExceeded) as refused:
        book(app, room_id, at(MONDAY + timedelta(days=6), 9), at(MONDAY + timedelta(days=6), 11))  # Sunday
    assert refused.value.errors["form"] == [
        "You may book Orion for at most 3 hours a week; this would pass it in the week of 2030-01-07."]
    book(app, room_id, at(MONDAY + timedelta(days=7), 9), at(MONDAY + timedelta(days=7), 11))  # the next week
    book(app, other_room_id, at(MONDAY, 9), at(MONDAY, 11))  # another room
    book(app, room_id, at(MONDAY, 14), at(MONDAY, 15))  # 3 hours: at the cap, not past it
    with pytest.raises(quotas.QuotaExceeded):  # a longer meeting is a move of hours, checked too
        booking.edit(db.session(), app.config["ROOMBRIDGE"], first.id, actor_email="alice@example.com",
                     actor_is_admin=False, end=at(MONDAY, 12), now=NOW)
    booking.edit(db.session(), app.config["ROOMBRIDGE"], first.id, actor_email="alice@example.com",
                 actor_is_admin=False, start=at(MONDAY, 16), end=at(MONDAY, 18), now=NOW)  # the same hours, moved


def test_hours_count_in_the_week_a_reservation_starts_in(limited):
    app, room_id, _ = limited(MAX_HOURS_PER_ROOM_PER_WEEK=3)
    session = db.session()
    sunday = MONDAY - timedelta(days=1)
    make_reservation(session, session.get(Room, room_id), start=at(sunday, 22), minutes=180)  # ends Monday 01:00
    session.commit()
    book(app, room_id, at(MONDAY, 9), at(MONDAY, 12))  # its 3 hours are the week before's: all 3 left here
    with pytest.raises(quotas.QuotaExceeded):
        book(app, room_id, at(sunday - timedelta(days=1), 9), at(sunday - timedelta(days=1), 10))  # that week


def test_occurrences_of_a_series_are_capped(limited):
    app, room_id, _ = limited(MAX_OCCURRENCES=5)
    with pytest.raises(booking.InvalidBooking):
        book(app, room_id, at(MONDAY, 10), at(MONDAY, 11), recurrence=booking.Recurrence(frequency="daily", count=6))
    assert len(book(app, room_id, at(MONDAY, 10), at(MONDAY, 11),
                    recurrence=booking.Recurrence(frequency="daily", count=5)).reservations) == 5


# --- invitation mails an hour -------------------------------------------------------------------------


def test_invitation_mails_an_hour_are_counted_per_person_in_redis(limited):
    app, room_id, _ = limited(INVITATIONS_PER_HOUR=10)
    # A series is one invitation: four occurrences for the booker and one attendee are two mails;
    # then one booking for the booker and five attendees: six more, eight in all.
    book(app, room_id, at(MONDAY, 10), at(MONDAY, 11), attendees=["bob@example.com"],
         recurrence=booking.Recurrence(frequency="daily", count=4))
    book(app, room_id, at(MONDAY, 9), at(MONDAY, 10), attendees=[f"p{n}@example.com" for n in range(5)])
    with pytest.raises(quotas.RateLimited) as refused:
        book(app, room_id, at(MONDAY, 12), at(MONDAY, 13), attendees=["bob@example.com", "carol@example.com"])
    assert 0 < refused.value.retry_after <= 3600
    assert "more than your 10 an hour" in str(refused.value)
    assert stored_count() == 5  # the refused booking rolled back
    # A new title tells nobody, so it costs no mail; another person has an hour of their own.
    first = db.session().scalars(sa.select(Reservation.id).order_by(Reservation.id)).first()
    booking.edit(db.session(), app.config["ROOMBRIDGE"], first, actor_email="alice@example.com",
                 actor_is_admin=False, title="Renamed", now=NOW)
    book(app, room_id, at(MONDAY, 12), at(MONDAY, 13), organiser_email="bob@example.com",
         attendees=["carol@example.com"])
    book(app, room_id, at(MONDAY, 14), at(MONDAY, 15), attendees=["bob@example.com"])  # two mails: the last ten
    with pytest.raises(quotas.RateLimited):
        booking.edit(db.session(), app.config["ROOMBRIDGE"], first, actor_email="alice@example.com",
                     actor_is_admin=False, start=at(MONDAY, 16), end=at(MONDAY, 17), now=NOW)
    assert [h["limit"] for h in quotas.recent_hits()] == ["invitations per hour"] * 2


def test_two_bookings_of_one_person_racing_cannot_pass_a_cap_together(limited):
    """The first booking holds its transaction open after inserting; the second, of the same person, in
    another room, must wait for it and then be refused: before the person's lock, PostgreSQL let both
    through, each reading the count before the other's insert was visible."""
    app, room_id, other_room_id = limited(MAX_LIVE_RESERVATIONS=1)
    first_inserted, second_done = threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def hold_first(session, _flush_context):
        if threading.current_thread().name == "first" and any(isinstance(o, Reservation) for o in session):
            first_inserted.set()
            second_done.wait(timeout=1.5)  # with the lock, the second is still waiting when this ends

    def attempt(name, room):
        with app.app_context():
            try:
                book(app, room, at(MONDAY, 10), at(MONDAY, 11))
                outcomes[name] = "booked"
            except quotas.QuotaExceeded:
                outcomes[name] = "refused"
            except Exception as error:  # shown by the assertion below
                outcomes[name] = repr(error)
            finally:
                if name == "second":
                    second_done.set()

    sa.event.listen(OrmSession, "after_flush_postexec", hold_first)
    try:
        first = threading.Thread(target=attempt, args=("first", room_id), name="first")
        first.start()
        assert first_inserted.wait(timeout=10), outcomes
        second = threading.Thread(target=attempt, args=("second", other_room_id), name="second")
        second.start()
        first.join(timeout=30)
        second.join(timeout=30)
    finally:
        sa.event.remove(OrmSession, "after_flush_postexec", hold_first)
    assert outcomes == {"first": "booked", "second": "refused"}
    assert stored_count() == 1

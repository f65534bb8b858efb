"""The finder's truth, without HTTP: it offers a room exactly when booking would accept it, and says why not."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from roombridge import booking, people
from roombridge.models import ReservationStatus
from tests.factories import make_reservation, make_room

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # a Monday, 12:00 in London
TODAY = date(2030, 1, 7)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), LONDON)


@pytest.fixture
def config(app):
    return app.config["ROOMBRIDGE"]


# The three untruths (21:00, the past, 07:00-19:30 longer than the 8 h maximum) and two that hold.
SLOTS = [
    (TODAY, time(21), time(22), "can be booked between 07:00-20:00"),
    (TODAY - timedelta(days=1), time(10), time(11), "The start is in the past."),
    (TODAY + timedelta(days=1), time(7), time(19, 30), "may last at most 8 h"),
    (TODAY + timedelta(days=400), time(10), time(11), "at most 180 days ahead"),
    (TODAY + timedelta(days=1), time(10), time(11), None),
    (TODAY, time(19), time(20), None),
]


@pytest.mark.parametrize(("day", "start", "end", "reason"), SLOTS)
def test_the_finder_offers_a_room_exactly_when_booking_accepts_it(session, config, day, start, end, reason):
    room = make_room(session, name="Atlas")
    session.commit()
    found = booking.assess(session, config, [room], day, start, end, NOW)[room.id]
    assert found.free  # nothing booked: only the rules can say no
    if reason is None:
        assert found.bookable and found.refusals == ()
    else:
        assert not found.bookable and any(reason in why for why in found.refusals), found.refusals

    request = booking.BookingRequest(room_id=room.id, organiser_email="alice@example.com", title="Planning",
                                     start=at(day, start.hour, start.minute), end=at(day, end.hour, end.minute))
    if reason is None:
        booking.book(session, config, request, now=NOW)
    else:
        with pytest.raises(booking.InvalidBooking) as refused:
            booking.book(session, config, request, now=NOW)
        # The very message the finder gave is the one the form would show.
        assert set(found.refusals) <= {m for messages in refused.value.errors.values() for m in messages}


def test_a_busy_room_says_when_it_is_next_free_and_offers_the_nearest_slots(session, config):
    room = make_room(session, name="Atlas")
    day = TODAY + timedelta(days=1)
    make_reservation(session, room, start=at(day, 13), end_at=at(day, 14, 30), status=ReservationStatus.CONFIRMED)
    make_reservation(session, room, start=at(day, 15), end_at=at(day, 16), status=ReservationStatus.CONFIRMED)
    session.commit()
    found = booking.assess(session, config, [room], day, time(14), time(15), NOW)[room.id]
    assert not found.free and [c.start for c in found.clashes] == [at(day, 13)]
    # 14:30-15:30 clashes with the 15:00 booking: the first hour free from 14:00 on starts at 16:00.
    assert found.next_free == at(day, 16)
    assert found.nearest == ((at(day, 11, 45), at(day, 12, 45)), (at(day, 12), at(day, 13)),
                             (at(day, 16), at(day, 17)))


def test_nearest_slots_keep_to_the_rules_too(session, config):
    room = make_room(session, name="Atlas", bookable_hours="09:00-12:00")
    make_reservation(session, room, start=at(TODAY, 11), end_at=at(TODAY, 12), status=ReservationStatus.CONFIRMED)
    session.commit()
    # 12:00 UTC is 12:00 in London: the morning is past and the room closes at 12:00, so nothing is offered.
    found = booking.assess(session, config, [room], TODAY, time(11), time(12), NOW)[room.id]
    assert found.next_free is None and found.nearest == ()


def test_other_rooms_that_fit_share_the_building_seats_and_features(session, config):
    asked = make_room(session, name="Atlas", building="HQ", capacity=10, features=["display"])
    fits = make_room(session, name="Borealis", building="HQ", capacity=12, features=["display", "whiteboard"])
    make_room(session, name="Small", building="HQ", capacity=4, features=["display"])
    make_room(session, name="Bare", building="HQ", capacity=12, features=[])
    make_room(session, name="Elsewhere", building="Annex", capacity=12, features=["display"])
    taken = make_room(session, name="Taken", building="HQ", capacity=12, features=["display"])
    day = TODAY + timedelta(days=1)
    make_reservation(session, taken, start=at(day, 10), end_at=at(day, 11), status=ReservationStatus.CONFIRMED)
    session.commit()
    found = booking.rooms_that_fit(session, config, asked, at(day, 10), at(day, 11), NOW, people=6)
    assert [r.name for r in found] == [fits.name]


def test_attendee_suggestions_come_from_people_here_in_the_organisations_domains(session, app):
    config = dataclasses.replace(app.config["ROOMBRIDGE"], ALLOWED_DOMAINS=frozenset({"example.com"}))
    room = make_room(session)
    people.remember(session, "Bob@Example.com", "Bob Baker")
    make_reservation(session, room, organiser_email="bobby@example.com",
                     attendees=["bo.outside@elsewhere.org", "robert@example.com"])
    session.commit()
    found = people.suggest(session, config, "bo")
    assert found == [{"email": "bob@example.com", "name": "Bob Baker"}, {"email": "bobby@example.com", "name": ""}]
    assert [p["email"] for p in people.suggest(session, config, "robert")] == ["robert@example.com"]
    assert people.suggest(session, config, "b") == []  # one letter lists no one
    assert people.suggest(session, config, "%%") == []  # typed text, not a LIKE pattern


def test_favourites_are_kept_per_person(session):
    atlas, cygnus = make_room(session, name="Atlas"), make_room(session, name="Cygnus")
    session.commit()
    assert people.set_favourite(session, "alice@example.com", cygnus.id, True)
    assert people.set_favourite(session, "alice@example.com", cygnus.id, True)  # twice is once
    assert people.favourite_room_ids(session, "alice@example.com") == {cygnus.id}
    assert people.favourite_room_ids(session, "bob@example.com") == set()
    assert people.set_favourite(session, "alice@example.com", cygnus.id, False)
    assert people.favourite_room_ids(session, "alice@example.com") == set()
    assert not people.set_favourite(session, "alice@example.com", 9999, True)
    assert atlas.id not in people.favourite_room_ids(session, "alice@example.com")

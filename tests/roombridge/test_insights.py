"""Insight figures on a known data set, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from roombridge import insights
from roombridge.models import Reservation, ReservationSource, ReservationStatus
from tests.factories import make_reservation, make_room

MONDAY = date(2030, 1, 7)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2030, 1, 7 + day, hour, minute, tzinfo=UTC)


def seed_known_week(session):
    """Two rooms, one week; the figures in the tests below follow from these rows by hand."""
    hq = make_room(session, name="Atlas", capacity=12, building="HQ", floor="1", time_zone="UTC")
    annex = make_room(session, name="Borealis", capacity=4, building="Annex", floor="2", time_zone="America/New_York")
    make_reservation(session, hq, at(0, 9), 60, status=ReservationStatus.CONFIRMED, source=ReservationSource.WEB,
                     attendees=["b@example.com"], checked_in_at=at(0, 9, 2), checked_in_by="alice@example.com")
    make_reservation(session, hq, at(0, 10), 120, status=ReservationStatus.RELEASED, source=ReservationSource.API,
                     missed_checkin_at=at(0, 10, 15), released_at=at(0, 10, 15))
    make_reservation(session, hq, at(1, 14), 60, status=ReservationStatus.CONFIRMED, source=ReservationSource.GOOGLE,
                     attendees=["b@example.com", "c@example.com"], checked_in_at=at(1, 14),
                     ended_early_at=at(1, 15), original_end_at=at(1, 16))
    make_reservation(session, hq, at(2, 9), 60, status=ReservationStatus.CANCELLED)  # not counted
    make_reservation(session, hq, at(7, 9), 60, status=ReservationStatus.CONFIRMED)  # after the range
    # 09:00-10:30 in New York (UTC-5 in January)
    make_reservation(session, annex, at(0, 14), 90, status=ReservationStatus.CONFIRMED,
                     source=ReservationSource.DISPLAY)
    session.flush()
    return hq, annex


def test_figures_per_room_and_in_total(session):
    hq, annex = seed_known_week(session)
    found = insights.compute(session, MONDAY, MONDAY + timedelta(days=6))
    by_name = {f.name: f.as_dict() for f in found.rooms}
    assert by_name["Atlas"] == {
        "room_id": hq.id, "calendar_id": hq.calendar_id, "name": "Atlas", "building": "HQ", "floor": "1",
        "capacity": 12, "bookings": 3, "booked_hours": 5.0, "checked_in_hours": 2.0, "released_hours": 2.0,
        "ended_early_hours": 1.0, "no_show_rate": 0.3333, "average_people": 2.0,
        "sources": {"web": 1, "api": 1, "google": 1, "display": 0},
    }
    assert by_name["Borealis"]["booked_hours"] == 1.5
    assert by_name["Borealis"]["no_show_rate"] is None  # no check-in decided either way
    assert by_name["Borealis"]["sources"]["display"] == 1
    total = found.total.as_dict()
    assert (total["bookings"], total["booked_hours"], total["released_hours"]) == (4, 6.5, 2.0)
    assert [f.name for f in found.rooms if f.oversized] == ["Borealis", "Atlas"]  # 1 of 4 seats, 2 of 12


def test_occupancy_by_weekday_and_hour_in_each_rooms_own_time(session):
    seed_known_week(session)
    occupancy = insights.compute(session, MONDAY, MONDAY + timedelta(days=6)).occupancy
    # Monday 09:00: Atlas (UTC) and Borealis (09:00 New York) both held: 100% of two rooms.
    assert occupancy[0][9] == 100.0
    assert occupancy[0][10] == 25.0  # Borealis's last half hour; Atlas's released booking holds nothing
    assert occupancy[0][11] == 0.0
    assert occupancy[1][14] == 50.0  # ended early at 15:00: only the 14:00 hour
    assert occupancy[1][15] == 0.0
    assert sum(map(sum, occupancy)) == 175.0


def test_filters_by_building_and_room(session):
    hq, annex = seed_known_week(session)
    only_hq = insights.compute(session, MONDAY, MONDAY + timedelta(days=6), building="HQ")
    assert [f.name for f in only_hq.rooms] == ["Atlas"] and only_hq.occupancy[0][9] == 100.0
    one = insights.compute(session, MONDAY, MONDAY + timedelta(days=6), room_ids=[annex.id])
    assert one.total.booked_hours == 1.5


@pytest.mark.parametrize(("start", "end", "problem"), [
    ("2030-01-10", "2030-01-07", "after the end"), ("2030-13-01", None, "YYYY-MM-DD"),
    ("2029-01-01", "2030-12-31", "at most"),
])
def test_bad_ranges_are_refused(start, end, problem):
    with pytest.raises(insights.InvalidRange, match=problem):
        insights.parse_range(start, end, MONDAY)


def test_default_range_is_the_last_four_weeks():
    assert insights.parse_range(None, None, MONDAY) == (MONDAY - timedelta(days=27), MONDAY)


def test_the_monthly_rollup_gives_the_live_figures_and_is_read_for_whole_months(session):
    seed_known_week(session)
    january = (date(2030, 1, 1), date(2030, 1, 31))
    live = insights.compute(session, *january)
    live_hq = insights.compute(session, *january, building="HQ")
    assert insights.refresh_month(session, date(2030, 1, 1)) == 2  # two rooms had bookings
    rolled = insights.compute(session, *january)
    assert [f.as_dict() for f in rolled.rooms] == [f.as_dict() for f in live.rooms]
    assert rolled.occupancy == live.occupancy
    rolled_hq = insights.compute(session, *january, building="HQ")
    assert rolled_hq.occupancy == live_hq.occupancy and rolled_hq.occupancy[0][9] == 50.0  # 2 of 4 Mondays

    # A change after the rollup: a whole month still reads the rollup; a part of it reads the rows.
    session.execute(sa.update(Reservation).values(status=ReservationStatus.CANCELLED))
    assert insights.compute(session, *january).total.bookings == 5
    assert insights.compute(session, date(2030, 1, 2), date(2030, 1, 31)).total.bookings == 0
    # The rollup job sums the latest whole months again, and fills in missing ones of the last year.
    assert insights.refresh_rollup(session, date(2030, 3, 15))[:2] == [date(2030, 2, 1), date(2030, 1, 1)]
    assert insights.compute(session, *january).total.bookings == 0
    assert insights.refresh_rollup(session, date(2030, 3, 20)) == [date(2030, 2, 1), date(2030, 1, 1)]

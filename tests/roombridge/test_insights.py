"""Insight figures on a known data set, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from roombridge import insights
from roombridge.models import ReleaseReason, Reservation, ReservationSource, ReservationStatus, UsageToDateMonth
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
    today = date(2030, 3, 15)
    live = insights.compute(session, *january, today=today, rollup=False)
    live_hq = insights.compute(session, *january, building="HQ", today=today, rollup=False)
    insights.refresh_month(session, date(2030, 1, 1))
    assert insights.plan(session, *january, today) == insights.Plan(months=[date(2030, 1, 1)])
    rolled = insights.compute(session, *january, today=today)
    assert [f.as_dict() for f in rolled.rooms] == [f.as_dict() for f in live.rooms]
    assert rolled.occupancy == live.occupancy
    rolled_hq = insights.compute(session, *january, building="HQ", today=today)
    assert rolled_hq.occupancy == live_hq.occupancy and rolled_hq.occupancy[0][9] == 50.0  # 2 of 4 Mondays

    # A change after the rollup: a whole month still reads the rollup until the job runs again.
    session.execute(sa.update(Reservation).values(status=ReservationStatus.CANCELLED, updated_at=datetime.now(UTC)))
    session.commit()
    assert insights.compute(session, *january, today=today).total.bookings == 5
    assert insights.compute(session, *january, today=today, rollup=False).total.bookings == 0
    # The job fills in every day of the last 13 whole months not summed yet, sums again the days
    # whose reservations changed since (January's four booked days), then those months from their days.
    days, months = insights.refresh_rollup(session, today)
    assert len(days) == (today - date(2029, 2, 1)).days - 31 + 4
    assert {date(2030, 1, d) for d in (7, 8, 9, 14)} <= set(days)
    assert months[0] == date(2029, 2, 1) and len(months) == 13
    assert insights.compute(session, *january, today=today).total.bookings == 0
    # The next run sums again only the latest days (late check-ins, releases, syncs) and, within the
    # margin for units of work still open at the last run, the changed ones; March is not over: no month row.
    days, months = insights.refresh_rollup(session, today)
    assert days == [date(2030, 1, d) for d in (7, 8, 9, 14)] + [date(2030, 3, 13), date(2030, 3, 14)]
    assert months == [date(2030, 1, 1)]


TODAY = date(2030, 3, 10)


def seed_months(session):
    """Four rooms in two buildings and three zones, bookings of every kind from December to mid-March."""
    hq1 = make_room(session, name="Atlas", capacity=12, building="HQ", floor="1", time_zone="UTC")
    hq2 = make_room(session, name="Boreas", capacity=6, building="HQ", floor="2", time_zone="Europe/Berlin")
    annex = make_room(session, name="Cirrus", capacity=4, building="Annex", floor="1", time_zone="America/New_York")
    make_room(session, name="Dormant", capacity=20, building="Annex", floor="1", time_zone="UTC")
    kinds = [
        {"status": ReservationStatus.CONFIRMED, "source": ReservationSource.WEB, "checked_in_at": True},
        {"status": ReservationStatus.RELEASED, "source": ReservationSource.API, "missed_checkin_at": True},
        {"status": ReservationStatus.CONFIRMED, "source": ReservationSource.GOOGLE, "attendees": ["b@example.com"]},
        {"status": ReservationStatus.CANCELLED, "source": ReservationSource.WEB},
        {"status": ReservationStatus.CONFIRMED, "source": ReservationSource.DISPLAY, "checked_in_at": True,
         "ended_early": True},
        {"status": ReservationStatus.CONFIRMED, "source": ReservationSource.WEB, "missed_checkin_at": True},
    ]
    day, n = date(2029, 12, 1), 0
    while day <= TODAY + timedelta(days=5):
        for room, hour in ((hq1, 9), (hq2, 23), (annex, 2)):  # 23:00 and 02:00 UTC cross midnight locally
            kind = dict(kinds[n % len(kinds)])
            n += 1
            start = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=hour, minutes=15 * (n % 3))
            minutes = 30 + 30 * (n % 4)
            fields = {"status": kind["status"], "source": kind["source"], "attendees": kind.get("attendees", [])}
            if kind.get("checked_in_at"):
                fields |= {"checked_in_at": start, "checked_in_by": "alice@example.com"}
            if kind.get("missed_checkin_at"):
                fields["missed_checkin_at"] = start + timedelta(minutes=10)
            if kind.get("ended_early"):
                fields |= {"ended_early_at": start + timedelta(minutes=20), "original_end_at":
                           start + timedelta(minutes=minutes), "end_at": start + timedelta(minutes=20)}
            make_reservation(session, room, start, minutes, **fields)
        day += timedelta(days=1)
    session.commit()
    return hq1, hq2, annex


RANGES = [
    (date(2030, 1, 1), date(2030, 1, 31)),  # one whole month
    (date(2029, 12, 1), date(2030, 2, 28)),  # three whole months
    (date(2029, 12, 17), date(2030, 2, 9)),  # ragged at both ends
    (date(2030, 2, 20), TODAY),  # to today (read live)
    (date(2030, 2, 1), TODAY + timedelta(days=3)),  # a whole month, then this month, today and later
    (date(2030, 1, 31), date(2030, 1, 31)),  # one day
    (date(2030, 1, 10), date(2030, 1, 20)),  # inside one month: running sums on the 20th minus the 9th
    (date(2030, 2, 2), date(2030, 3, 3)),  # from the 2nd: minus the 1st
    (TODAY, TODAY),
]


@pytest.mark.parametrize("filters", ["all", "building", "floor", "room"])
def test_the_rollup_answers_exactly_as_the_reservations_do(session, filters):
    hq1, hq2, annex = seed_months(session)
    chosen = {"all": {}, "building": {"building": "HQ"}, "floor": {"building": "Annex", "floor": "1"},
              "room": {"room_ids": [hq2.id]}}[filters]
    insights.refresh_rollup(session, TODAY)
    # Only today and later are read live once the rollup is complete; parts of months from running sums.
    assert insights.plan(session, date(2029, 12, 17), TODAY + timedelta(days=3), TODAY) == insights.Plan(
        months=[date(2030, 1, 1), date(2030, 2, 1)],
        to_date=[(date(2029, 12, 17), date(2029, 12, 31)), (date(2030, 3, 1), TODAY - timedelta(days=1))],
        live=[(TODAY, TODAY + timedelta(days=3))])
    _rolled_equals_live(session, chosen)

    # Without running sums (not summed yet), the same days come from the day rows: the same answers.
    session.execute(sa.delete(UsageToDateMonth))
    session.commit()
    assert insights.plan(session, date(2029, 12, 17), TODAY + timedelta(days=3), TODAY) == insights.Plan(
        months=[date(2030, 1, 1), date(2030, 2, 1)],
        days=[(date(2029, 12, 17), date(2029, 12, 31)), (date(2030, 3, 1), TODAY - timedelta(days=1))],
        live=[(TODAY, TODAY + timedelta(days=3))])
    _rolled_equals_live(session, chosen)


def _rolled_equals_live(session, chosen: dict) -> None:
    held = 0.0
    for start, end in RANGES:
        rolled = insights.compute(session, start, end, today=TODAY, **chosen)
        live = insights.compute(session, start, end, today=TODAY, rollup=False, **chosen)
        assert [f.as_dict() for f in rolled.rooms] == [f.as_dict() for f in live.rooms], (start, end)
        assert rolled.total.as_dict() == live.total.as_dict(), (start, end)
        assert rolled.occupancy == live.occupancy, (start, end)
        assert live.total.bookings > 0
        held += sum(map(sum, live.occupancy))
    assert held > 0


def test_a_change_to_the_past_reaches_the_rollup_on_its_next_run(session):
    hq1, _, _ = seed_months(session)
    insights.refresh_rollup(session, TODAY)
    january = (date(2030, 1, 1), date(2030, 1, 31))
    before = insights.compute(session, *january, today=TODAY).total.bookings
    # A late sync cancels a January booking: the next run finds its day by updated_at, sums the
    # day again and the month from its days.
    changed = session.scalar(sa.select(Reservation).where(
        Reservation.room_id == hq1.id, Reservation.start_at >= datetime(2030, 1, 20, tzinfo=UTC),
        Reservation.status != ReservationStatus.CANCELLED).order_by(Reservation.start_at).limit(1))
    changed.status = ReservationStatus.CANCELLED
    session.commit()
    days, months = insights.refresh_rollup(session, TODAY)
    assert changed.start_at.date() in days and date(2030, 1, 1) in months
    after = insights.compute(session, *january, today=TODAY)
    assert after.total.bookings == before - 1
    assert after.total.as_dict() == insights.compute(session, *january, today=TODAY, rollup=False).total.as_dict()
    # Today is always read live: a booking made now counts at once.
    counted = insights.compute(session, TODAY, TODAY, today=TODAY).total.bookings
    make_reservation(session, hq1, datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(hours=15), 60,
                     status=ReservationStatus.CONFIRMED)
    session.commit()
    assert insights.compute(session, TODAY, TODAY, today=TODAY).total.bookings == counted + 1


def test_instances_of_a_google_series_the_room_declined_are_neither_booked_nor_no_shows(session):
    hq, _ = seed_known_week(session)
    make_reservation(session, hq, at(3, 9), 60, status=ReservationStatus.RELEASED, source=ReservationSource.GOOGLE,
                     release_reason=ReleaseReason.SERIES_ENDED, released_at=at(0, 10, 15), series_id="g1")
    session.flush()
    week = insights.compute(session, MONDAY, MONDAY + timedelta(days=6), building="HQ")
    total = week.total.as_dict()
    assert (total["bookings"], total["released_hours"], total["no_show_rate"]) == (3, 2.0, 0.3333)  # as before

"""Booking rules, called without HTTP: policies, DST, recurrence, conflicts, edit/cancel rights."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from roombridge import booking, publish
from roombridge.models import AuditEntry, Reservation, ReservationSource, ReservationStatus, Room
from roombridge.queue import queue
from tests.factories import make_reservation, make_room

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def at(day: date, hour: int, minute: int = 0, zone=LONDON) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)


def request(room, start, end, **fields) -> booking.BookingRequest:
    return booking.BookingRequest(room_id=room.id, organiser_email=fields.pop("organiser_email", "alice@example.com"),
                                  title=fields.pop("title", "Planning"), start=start, end=end, **fields)


@pytest.fixture
def config(app):
    return app.config["ROOMBRIDGE"]


def book(session, config, req, now=NOW):
    return booking.book(session, config, req, now=now)


def test_a_booking_is_stored_pending_and_its_google_write_queued(session, config):
    room = make_room(session)
    result = book(session, config, request(room, at(date(2030, 1, 7), 10), at(date(2030, 1, 7), 11),
                                           attendees=["Bob@Example.com", "bob@example.com", "carol@example.com"]))
    [reservation] = result.reservations
    session.expire_all()
    stored = session.get(Reservation, reservation.id)
    assert stored.status == ReservationStatus.PENDING
    assert stored.attendees == ["bob@example.com", "carol@example.com"]
    assert stored.start_at == datetime(2030, 1, 7, 10, tzinfo=UTC)  # London is UTC in January
    assert result.warnings == []
    jobs = queue("write").jobs
    assert [j.args for j in jobs] == [(reservation.id,)]
    assert session.scalar(sa.select(AuditEntry.action)) == "reservation.create"


def test_capacity_is_a_warning_not_a_refusal(session, config):
    room = make_room(session, capacity=2)
    result = book(session, config, request(room, at(date(2030, 1, 7), 10), at(date(2030, 1, 7), 11),
                                           attendees=["b@example.com", "c@example.com"]))
    assert len(result.reservations) == 1
    assert result.warnings == [f"3 people are invited but {room.name} seats 2."]


@pytest.mark.parametrize(
    ("start", "end", "field", "fragment"),
    [
        (at(date(2030, 1, 7), 11), at(date(2030, 1, 7), 10), "end", "after the start"),
        (at(date(2030, 1, 7), 6), at(date(2030, 1, 7), 8), "start", "between 07:00-20:00"),
        (at(date(2030, 1, 7), 19), at(date(2030, 1, 7), 21), "start", "between 07:00-20:00"),
        (at(date(2030, 1, 7), 8), at(date(2030, 1, 7), 17, 30), "end", "at most 8 h"),
        (at(date(2029, 12, 31), 10), at(date(2029, 12, 31), 11), "start", "in the past"),
        (at(date(2030, 12, 31), 10), at(date(2030, 12, 31), 11), "start", "at most 180 days ahead"),
        (datetime(2030, 1, 7, 10), datetime(2030, 1, 7, 11), "start", "time zone"),
    ],
)
def test_rules_refuse_with_a_message_per_field(session, config, start, end, field, fragment):
    room = make_room(session)
    with pytest.raises(booking.InvalidBooking) as caught:
        book(session, config, request(room, start, end))
    assert any(fragment in message for message in caught.value.errors[field]), caught.value.errors
    assert session.scalar(sa.select(sa.func.count(Reservation.id))) == 0
    assert queue("write").count == 0


def test_room_policies_override_the_defaults_in_the_rooms_own_zone(session, config):
    room = make_room(session, time_zone="America/New_York", bookable_hours="09:00-17:00",
                     max_duration_minutes=30, min_notice_minutes=60 * 24)
    ny = ZoneInfo("America/New_York")
    # 09:00-09:30 New York is 14:00 UTC: allowed although 14:00 in London would be too.
    ok = book(session, config, request(room, at(date(2030, 1, 7), 9, 0, ny), at(date(2030, 1, 7), 9, 30, ny)))
    assert ok.reservations[0].start_at == datetime(2030, 1, 7, 14, tzinfo=UTC)
    with pytest.raises(booking.InvalidBooking) as caught:
        book(session, config, request(room, at(date(2030, 1, 1), 16, 0, ny), at(date(2030, 1, 1), 17, 0, ny)))
    assert "at most 30 min" in caught.value.errors["end"][0]
    assert "at least 24 h ahead" in caught.value.errors["start"][0]


def test_unknown_or_out_of_scope_room_and_bad_attendees(session, config):
    room = make_room(session, in_scope=False)
    with pytest.raises(booking.InvalidBooking) as caught:
        book(session, config, request(room, at(date(2030, 1, 7), 10), at(date(2030, 1, 7), 11),
                                      attendees=["not-an-address"], title=" "))
    assert set(caught.value.errors) == {"room_id", "attendees", "title"}
    with pytest.raises(booking.InvalidBooking) as caught:
        booking.book(session, config, booking.BookingRequest(
            room_id=999, organiser_email="alice@example.com", title="x",
            start=at(date(2030, 1, 7), 10), end=at(date(2030, 1, 7), 11)), now=NOW)
    assert caught.value.errors == {"room_id": ["No such room."]}


def test_overlap_is_refused_naming_the_clashing_reservation_but_back_to_back_is_fine(session, config):
    room = make_room(session)
    first = book(session, config, request(room, at(date(2030, 1, 7), 10), at(date(2030, 1, 7), 11))).reservations[0]
    book(session, config, request(room, at(date(2030, 1, 7), 11), at(date(2030, 1, 7), 12)))
    with pytest.raises(booking.Conflict) as caught:
        book(session, config, request(room, at(date(2030, 1, 7), 10, 30), at(date(2030, 1, 7), 10, 45)))
    assert [c.reservation_id for c in caught.value.clashes] == [first.id]
    # A cancelled reservation holds nothing.
    booking.cancel(session, config, first.id, actor_email="alice@example.com", actor_is_admin=False)
    book(session, config, request(room, at(date(2030, 1, 7), 10, 30), at(date(2030, 1, 7), 10, 45)))


def test_the_database_has_the_last_word_when_the_select_saw_nothing(session, config, monkeypatch):
    room = make_room(session)
    other = make_reservation(session, room, datetime(2030, 1, 7, 10, tzinfo=UTC), title="Raced in")
    session.commit()
    # Pretend the check ran before the other booking committed: only the database can refuse now.
    calls = []

    def blind_first_time(*args, **kwargs):
        calls.append(args)
        return {} if len(calls) == 1 else real_find_clashes(*args, **kwargs)

    real_find_clashes = booking.find_clashes
    for module in (booking.commands, booking.conflicts):  # the command's SELECT, and the naming after a race
        monkeypatch.setattr(module, "find_clashes", blind_first_time)
    with pytest.raises(booking.Conflict) as caught:
        book(session, config, request(room, at(date(2030, 1, 7), 10, 30), at(date(2030, 1, 7), 11, 30)))
    assert len(calls) == 2  # the SELECT, then the naming of the clash after the database refused
    assert [(c.reservation_id, c.title) for c in caught.value.clashes] == [(other.id, "Raced in")]
    assert session.scalar(sa.select(sa.func.count(Reservation.id))) == 1


def test_weekly_series_keeps_wall_clock_time_across_dst(session, config):
    room = make_room(session)
    # London moves to BST on Sunday 31 March 2030: 09:00 local is 09:00Z before, 08:00Z after.
    start = at(date(2030, 3, 25), 9)
    result = book(session, config, request(room, start, start + timedelta(hours=1),
                                           recurrence=booking.Recurrence("weekly", weekdays=[0, 2], count=4)))
    starts = [r.start_at for r in result.reservations]
    assert starts == [
        datetime(2030, 3, 25, 9, tzinfo=UTC),
        datetime(2030, 3, 27, 9, tzinfo=UTC),
        datetime(2030, 4, 1, 8, tzinfo=UTC),
        datetime(2030, 4, 3, 8, tzinfo=UTC),
    ]
    assert all(r.end_at - r.start_at == timedelta(hours=1) for r in result.reservations)
    assert len({r.series_id for r in result.reservations}) == 1


def test_daily_series_until_a_date_and_its_limit(session, config):
    room = make_room(session)
    start = at(date(2030, 1, 7), 10)
    result = book(session, config, request(room, start, start + timedelta(minutes=30),
                                           recurrence=booking.Recurrence("daily", until=date(2030, 1, 11))))
    assert [r.start_at.day for r in result.reservations] == [7, 8, 9, 10, 11]
    with pytest.raises(booking.InvalidBooking) as caught:
        book(session, config, request(room, start + timedelta(hours=2), start + timedelta(hours=3),
                                      recurrence=booking.Recurrence("daily", until=date(2030, 6, 1))))
    assert "At most 52 occurrences" in caught.value.errors["recurrence"][0]
    with pytest.raises(booking.InvalidBooking):
        book(session, config, request(room, start + timedelta(hours=2), start + timedelta(hours=3),
                                      recurrence=booking.Recurrence("daily", count=3, until=date(2030, 1, 20))))


def test_series_clashes_are_all_named_and_nothing_is_stored_unless_skipping(session, config):
    room = make_room(session)
    base = at(date(2030, 1, 7), 10)
    blockers = [make_reservation(session, room, base + timedelta(days=d)) for d in (1, 3)]
    session.commit()
    series = request(room, base, base + timedelta(hours=1), recurrence=booking.Recurrence("daily", count=5))
    with pytest.raises(booking.Conflict) as caught:
        book(session, config, series)
    assert [c.reservation_id for c in caught.value.clashes] == [b.id for b in blockers]
    assert session.scalar(sa.select(sa.func.count(Reservation.id))) == 2

    series.skip_conflicts = True
    result = book(session, config, series)
    assert [r.start_at.day for r in result.reservations] == [7, 9, 11]
    assert [s.day for s in result.skipped] == [8, 10]
    assert "2 clashing occurrence(s) were left out." in result.warnings


def test_every_occurrence_is_checked_against_the_rules(session, config):
    room = make_room(session, max_days_ahead=10)
    start = at(date(2030, 1, 7), 10)
    with pytest.raises(booking.InvalidBooking) as caught:
        book(session, config, request(room, start, start + timedelta(hours=1),
                                      recurrence=booking.Recurrence("weekly", count=3)))
    assert caught.value.errors["recurrence"] == [
        "The occurrence on 2030-01-14 10:00: " f"{room.name} can be booked at most 10 days ahead.",
        "The occurrence on 2030-01-21 10:00: " f"{room.name} can be booked at most 10 days ahead.",
    ]


def test_edit_rechecks_rules_and_only_organiser_or_admin_may(session, config):
    room, other_room = make_room(session), make_room(session)
    day = date(2030, 1, 7)
    mine = book(session, config, request(room, at(day, 10), at(day, 11), attendees=["bob@example.com"])).reservations[0]
    theirs = book(session, config, request(room, at(day, 12), at(day, 13), organiser_email="carol@example.com"))
    queue("write").empty()

    with pytest.raises(booking.NotAllowed):  # bob attends, so he sees it, but may not change it
        booking.edit(session, config, mine.id, actor_email="bob@example.com", actor_is_admin=False, title="Mine")
    with pytest.raises(booking.NotFound):  # dave neither organises nor attends
        booking.edit(session, config, mine.id, actor_email="dave@example.com", actor_is_admin=False, title="Mine")
    with pytest.raises(booking.Conflict) as caught:
        booking.edit(session, config, mine.id, actor_email="alice@example.com", actor_is_admin=False,
                     end=at(day, 12, 30), now=NOW)
    assert [c.reservation_id for c in caught.value.clashes] == [theirs.reservations[0].id]
    with pytest.raises(booking.InvalidBooking) as caught:
        booking.edit(session, config, mine.id, actor_email="alice@example.com", actor_is_admin=False,
                     start=at(day, 5), now=NOW)
    assert "start" in caught.value.errors

    result = booking.edit(session, config, mine.id, actor_email="admin@example.com", actor_is_admin=True,
                          room_id=other_room.id, start=at(day, 12), end=at(day, 13), title="Moved", now=NOW)
    moved = result.reservations[0]
    assert (moved.room_id, moved.start_at, moved.title, moved.status) == (
        other_room.id, datetime(2030, 1, 7, 12, tzinfo=UTC), "Moved", ReservationStatus.PENDING)
    assert [j.args for j in queue("write").jobs] == [(mine.id,)]


def test_cancel_and_retry_write(session, config):
    room = make_room(session)
    failed = make_reservation(session, room, status=ReservationStatus.FAILED, status_reason="forbidden")
    session.commit()
    with pytest.raises(booking.NotFound):
        booking.cancel(session, config, failed.id, actor_email="mallory@example.com", actor_is_admin=False)
    again = booking.retry_write(session, failed.id, actor_email="admin@example.com", actor_is_admin=True)
    assert (again.status, again.status_reason) == (ReservationStatus.PENDING, None)
    cancelled = booking.cancel(session, config, failed.id, actor_email="alice@example.com", actor_is_admin=False)
    assert cancelled.status == ReservationStatus.CANCELLED
    assert [j.args for j in queue("write").jobs] == [(failed.id,), (failed.id,)]
    with pytest.raises(booking.InvalidBooking):
        booking.retry_write(session, failed.id, actor_email="alice@example.com", actor_is_admin=False)


def test_google_made_reservations_are_changed_in_google_only(session, config):
    room = make_room(session)
    mirrored = make_reservation(session, room, source=ReservationSource.GOOGLE, status=ReservationStatus.CONFIRMED)
    session.commit()
    with pytest.raises(booking.NotAllowed):
        booking.edit(session, config, mirrored.id, actor_email="admin@example.com", actor_is_admin=True, title="x")


def test_a_booking_survives_redis_being_down(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    with app.app_context():
        from roombridge import db

        session = db.session()
        room = make_room(session)
        result = booking.book(session, app.config["ROOMBRIDGE"],
                              request(room, at(date(2030, 1, 7), 10), at(date(2030, 1, 7), 11)), now=NOW)
        session.expire_all()
        assert session.get(Reservation, result.reservations[0].id).status == ReservationStatus.PENDING


def test_day_timeline_uses_each_rooms_own_day(session):
    london, tokyo = make_room(session), make_room(session, time_zone="Asia/Tokyo")
    # 23:30Z on 6 Jan is 6 Jan in London but 7 Jan 08:30 in Tokyo.
    late = make_reservation(session, london, datetime(2030, 1, 6, 23, 0, tzinfo=UTC))
    tokyo_morning = make_reservation(session, tokyo, datetime(2030, 1, 6, 23, 30, tzinfo=UTC))
    make_reservation(session, london, datetime(2030, 1, 7, 9, tzinfo=UTC), status=ReservationStatus.CANCELLED)
    london_day = make_reservation(session, london, datetime(2030, 1, 7, 12, tzinfo=UTC))
    session.commit()
    timeline = booking.day_timeline(session, [london, tokyo], date(2030, 1, 7))
    assert [b.reservation_id for b in timeline[london.id]] == [london_day.id]
    assert [b.reservation_id for b in timeline[tokyo.id]] == [tokyo_morning.id]
    assert late.id not in [b.reservation_id for b in timeline[london.id]]


def test_find_free_rooms(session):
    small = make_room(session, capacity=4, building="A", features=["Screen"])
    big = make_room(session, capacity=12, building="A", features=["screen", "vc"])
    busy = make_room(session, capacity=12, building="A", features=["screen", "vc"])
    make_room(session, capacity=20, in_scope=False)
    make_room(session, capacity=20, building="B", features=["screen", "vc"])
    make_reservation(session, busy, datetime(2030, 1, 7, 10, tzinfo=UTC))
    session.commit()
    start, end = datetime(2030, 1, 7, 10, 30, tzinfo=UTC), datetime(2030, 1, 7, 11, tzinfo=UTC)
    assert booking.find_free_rooms(session, start, end, building="A", features=["screen"]) == [small, big]
    assert booking.find_free_rooms(session, start, end, people=5, building="A", features=["VC"]) == [big]


def test_list_reservations_shows_only_what_the_actor_may_see(session):
    room = make_room(session)
    mine = make_reservation(session, room, organiser_email="alice@example.com")
    invited = make_reservation(session, room, datetime(2030, 1, 8, 10, tzinfo=UTC),
                               organiser_email="carol@example.com", attendees=["alice@example.com"])
    others = make_reservation(session, room, datetime(2030, 1, 9, 10, tzinfo=UTC), organiser_email="carol@example.com")
    session.commit()
    seen = booking.list_reservations(session, actor_email="alice@example.com", actor_is_admin=False)
    assert [r.id for r in seen] == [mine.id, invited.id]
    seen = booking.list_reservations(session, actor_email="x@example.com", actor_is_admin=True,
                                     start=datetime(2030, 1, 8, tzinfo=UTC))
    assert [r.id for r in seen] == [invited.id, others.id]


def test_the_event_footer_is_added_for_room_mode_and_stripped_back(session):
    room = make_room(session)
    reservation = make_reservation(session, room, description="Agenda:\n1. plans",
                                   attendees=["bob@example.com"])
    text = publish.event_description(reservation, delegated=False)
    assert "alice@example.com" in text and "bob@example.com" in text
    assert publish.description_from_event(text) == "Agenda:\n1. plans"
    assert publish.description_from_event("Typed in Google") == "Typed in Google"
    assert publish.description_from_event(None) == ""
    assert publish.event_description(reservation, delegated=True) == "Agenda:\n1. plans"


def _google_conflict(session, room, over, start=None, minutes=60):
    return make_reservation(session, room, start=start or over.start_at, minutes=minutes,
                            source=ReservationSource.GOOGLE, status=ReservationStatus.CONFLICT,
                            conflict_with_id=over.id, organiser_email="dana@example.com",
                            google_event_id=f"evt{over.id}x{minutes}")


def test_a_cancelled_reservation_frees_its_slot_for_the_google_conflict(session, config):
    room = make_room(session)
    ours = make_reservation(session, room)
    waiting = _google_conflict(session, room, ours)
    session.commit()
    booking.cancel(session, config, ours.id, actor_email="alice@example.com", actor_is_admin=False)
    session.expire_all()
    settled = session.get(Reservation, waiting.id)
    assert (settled.status, settled.conflict_with_id) == (ReservationStatus.CONFIRMED, None)
    actions = session.scalars(sa.select(AuditEntry.action).where(AuditEntry.entity_id == str(waiting.id))).all()
    assert actions == ["reservation.conflict_settled"]


def test_a_conflict_that_still_overlaps_something_live_stays_a_conflict(session, config):
    room = make_room(session)
    first = make_reservation(session, room, minutes=60)
    second = make_reservation(session, room, start=first.end_at, minutes=60)
    waiting = _google_conflict(session, room, first, minutes=120)  # over both
    session.commit()
    booking.cancel(session, config, first.id, actor_email="alice@example.com", actor_is_admin=False)
    session.expire_all()
    assert session.get(Reservation, waiting.id).status == ReservationStatus.CONFLICT
    assert session.get(Reservation, second.id).status == ReservationStatus.PENDING


def test_moving_a_reservation_away_settles_the_conflict_it_caused(session, config):
    room = make_room(session)
    ours = make_reservation(session, room, start=at(date(2030, 1, 7), 10), minutes=60)
    waiting = _google_conflict(session, room, ours)
    session.commit()
    booking.edit(session, config, ours.id, actor_email="alice@example.com", actor_is_admin=False,
                 start=at(date(2030, 1, 7), 14), end=at(date(2030, 1, 7), 15), now=NOW)
    session.expire_all()
    assert session.get(Reservation, waiting.id).status == ReservationStatus.CONFIRMED
    assert session.get(Reservation, ours.id).start_at == at(date(2030, 1, 7), 14)


def test_racing_bookings_get_one_reservation_and_conflicts_never_an_error(app):
    """Twelve bookings of one slot at once: one stored, every other a Conflict naming it.

    On PostgreSQL the exclusion constraint's waits can form a cycle and the database aborts
    some racers as deadlocked; the booking tries those again and they meet the winner.
    """
    import threading

    from roombridge import db

    with app.app_context():
        room_id = make_room(db.session(), capacity=20).id
        db.session().commit()
    barrier = threading.Barrier(12)
    outcomes: list = []
    start = at(date(2030, 1, 7), 10)

    def attempt(i: int) -> None:
        with app.app_context():
            barrier.wait()
            try:
                result = booking.book(db.session(), app.config["ROOMBRIDGE"],
                                      request(db.session().get(Room, room_id), start + timedelta(minutes=i),
                                              start + timedelta(minutes=60 + i)), now=NOW)
                outcomes.append(("booked", result.reservations[0].id))
            except booking.Conflict as conflict:
                outcomes.append(("conflict", tuple(c.reservation_id for c in conflict.clashes)))
            except Exception as other:  # anything else is the failure this test is about
                outcomes.append(("error", repr(other)))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    booked = [value for kind, value in outcomes if kind == "booked"]
    assert len(booked) == 1, outcomes
    assert sorted(kind for kind, _ in outcomes) == ["booked"] + ["conflict"] * 11, outcomes


def test_every_other_week_on_two_days_and_monthly_on_a_date_or_a_weekday(session, config):
    room = make_room(session)
    start = at(date(2030, 1, 7), 10)  # a Monday
    fortnightly = book(session, config, request(room, start, start + timedelta(hours=1), recurrence=booking.Recurrence(
        "weekly", weekdays=[0, 3], count=4, interval=2)))
    assert [r.start_at.date() for r in fortnightly.reservations] == [
        date(2030, 1, 7), date(2030, 1, 10), date(2030, 1, 21), date(2030, 1, 24)]

    second_tuesday = at(date(2030, 1, 8), 14)  # the 2nd Tuesday of January 2030
    by_weekday = book(session, config, request(room, second_tuesday, second_tuesday + timedelta(hours=1),
                                               recurrence=booking.Recurrence("monthly", monthly="weekday",
                                                                             until=date(2030, 4, 30))))
    assert [r.start_at.astimezone(LONDON).date() for r in by_weekday.reservations] == [
        date(2030, 1, 8), date(2030, 2, 12), date(2030, 3, 12), date(2030, 4, 9)]
    # Across the change to BST the meeting stays at 14:00 London time.
    assert {r.start_at.astimezone(LONDON).hour for r in by_weekday.reservations} == {14}

    by_date = book(session, config, request(room, at(date(2030, 1, 31), 16), at(date(2030, 1, 31), 17),
                                            recurrence=booking.Recurrence("monthly", count=3)))
    # As RFC 5545 (and Google) say: a month without a 31st has no occurrence.
    assert [r.start_at.date() for r in by_date.reservations] == [date(2030, 1, 31), date(2030, 3, 31),
                                                                  date(2030, 5, 31)]


def test_repeat_rule_limits_and_its_rrule_line(session, config):
    room = make_room(session)
    start = at(date(2030, 1, 7), 10)
    for wrong in (booking.Recurrence("yearly", count=2), booking.Recurrence("weekly", count=2, interval=0),
                  booking.Recurrence("monthly", count=2, monthly="sometimes")):
        with pytest.raises(booking.InvalidBooking) as caught:
            book(session, config, request(room, start, start + timedelta(hours=1), recurrence=wrong))
        assert caught.value.errors["recurrence"]
    from roombridge.booking.recurrence import rrule_line
    assert rrule_line(booking.Recurrence("weekly", weekdays=[2, 0], interval=2, until=date(2030, 6, 30)),
                      start, LONDON) == "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;UNTIL=20300630T225959Z"
    assert rrule_line(booking.Recurrence("monthly", monthly="weekday", count=3), at(date(2030, 1, 29), 10),
                      LONDON) == "RRULE:FREQ=MONTHLY;BYDAY=-1TU;COUNT=3"
    from roombridge.booking.recurrence import describe
    assert describe("RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;UNTIL=20300630T225959Z", LONDON) == (
        "Every 2 weeks on Monday and Wednesday, until Sun 30 Jun 2030")
    assert describe("RRULE:FREQ=MONTHLY;BYDAY=2TU;COUNT=3", LONDON) == "Every month on the second Tuesday, 3 times"

"""Check-in rules without Google: the window, who may check in, the deadline, series, end early, extend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from roombridge import booking, checkin
from roombridge.booking.conflicts import find_clashes
from roombridge.checkin import apply_deadline, check_in, display_actor, end_early, extend, person
from roombridge.mirror import Action, decide, read_event
from roombridge.models import (
    AuditEntry,
    CheckinDeadlineAction,
    ReleaseReason,
    Reservation,
    ReservationSource,
    ReservationStatus,
)
from roombridge.queue import queue
from roombridge.unit_of_work import unit_of_work
from tests.factories import make_reservation, make_room

START = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)  # a Monday; London is on UTC in January
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


@pytest.fixture
def config(app):
    return app.config["ROOMBRIDGE"]


@pytest.fixture
def room(session):
    with unit_of_work(session):
        return make_room(session, checkin_required=True, checkin_opens_minutes=10, checkin_grace_minutes=15)


@pytest.fixture
def meeting(session, room):
    with unit_of_work(session):
        return make_reservation(session, room, START, status=ReservationStatus.CONFIRMED, organiser_email=ALICE,
                                attendees=[BOB])


def _audit(session, action):
    return session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)).all()


@pytest.mark.parametrize("who, minute", [(ALICE, -10), (BOB, 0), (ALICE, 15)])
def test_organiser_and_attendees_check_in_inside_the_window(session, config, meeting, who, minute):
    at = START + timedelta(minutes=minute)

    done = check_in(session, config, meeting.id, person(who), now=at)

    assert (done.checked_in_at, done.checked_in_by) == (at, who)
    assert [e.actor for e in _audit(session, "reservation.check_in")] == [who]
    assert check_in(session, config, meeting.id, person(ALICE), now=at).checked_in_by == who  # twice: harmless


@pytest.mark.parametrize("minute, message", [(-11, "Check-in opens at 09:50."), (16, "Check-in closed at 10:15.")])
def test_check_in_outside_the_window_is_refused(session, config, meeting, minute, message):
    with pytest.raises(booking.InvalidBooking) as refused:
        check_in(session, config, meeting.id, person(ALICE), now=START + timedelta(minutes=minute))

    assert refused.value.errors == {"check_in": [message]}
    assert session.get(Reservation, meeting.id).checked_in_at is None


def test_the_room_display_checks_in_only_its_own_room(session, config, meeting):
    with unit_of_work(session):
        other = make_room(session)
    with pytest.raises(booking.NotFound):
        check_in(session, config, meeting.id, display_actor(other.id), now=START)
    with pytest.raises(booking.NotFound):
        check_in(session, config, meeting.id, person(CAROL), now=START)  # neither organiser nor attendee

    assert check_in(session, config, meeting.id, display_actor(meeting.room_id), now=START).checked_in_by == "display"


def test_a_no_show_is_released_once_and_its_slot_is_free_at_once(session, config, room, meeting):
    deadline = START + timedelta(minutes=15)
    assert apply_deadline(session, config, meeting.id, now=deadline - timedelta(seconds=1)) == "not due"

    assert apply_deadline(session, config, meeting.id, now=deadline) == "released"
    assert apply_deadline(session, config, meeting.id, now=deadline) == "nothing"  # a second run

    released = session.get(Reservation, meeting.id)
    assert (released.status, released.release_reason, released.released_at) == (
        ReservationStatus.RELEASED, ReleaseReason.NO_SHOW, deadline)
    assert released.status_reason == "released: nobody checked in by 10:15"
    assert len(_audit(session, "reservation.released")) == 1
    assert find_clashes(session, room.id, [(START, START + timedelta(hours=1))]) == {}
    # Told once: the Google write and the organiser's mail, queued after the commit.
    queued = [(j.func_name.rpartition(".")[2], j.args) for q in ("write", "default") for j in queue(q).jobs]
    assert sorted(queued) == [("send_checkin_notice", (meeting.id, "released")), ("write_reservation", (meeting.id,))]
    with pytest.raises(booking.InvalidBooking):
        check_in(session, config, meeting.id, person(ALICE), now=deadline)


def test_a_check_in_that_came_first_wins_over_the_deadline(session, config, meeting):
    check_in(session, config, meeting.id, person(BOB), now=START + timedelta(minutes=14))

    assert apply_deadline(session, config, meeting.id, now=START + timedelta(minutes=15)) == "nothing"
    assert checkin.release_no_shows(session, config, now=START + timedelta(minutes=20)) == {}
    assert session.get(Reservation, meeting.id).status == ReservationStatus.CONFIRMED


def test_the_scan_finds_only_rooms_that_require_check_in(session, config, room, meeting):
    with unit_of_work(session):
        relaxed = make_room(session)  # CHECKIN_REQUIRED is false by default
        make_reservation(session, relaxed, START, status=ReservationStatus.CONFIRMED)
        make_reservation(session, room, START + timedelta(hours=2), status=ReservationStatus.CONFIRMED)

    assert checkin.due_for_deadline(session, config, START + timedelta(minutes=15)) == [meeting.id]


def test_a_room_that_only_flags_keeps_the_booking(session, config, room, meeting):
    with unit_of_work(session):
        room.checkin_deadline_action = CheckinDeadlineAction.FLAG

    assert apply_deadline(session, config, meeting.id, now=START + timedelta(minutes=20)) == "flagged"
    assert apply_deadline(session, config, meeting.id, now=START + timedelta(minutes=20)) == "nothing"

    flagged = session.get(Reservation, meeting.id)
    assert (flagged.status, flagged.missed_checkin_at, flagged.released_at) == (
        ReservationStatus.CONFIRMED, START + timedelta(minutes=20), None)


def test_a_series_released_three_times_in_a_row_is_ended_after_a_warning(session, config, room):
    with unit_of_work(session):
        weekly = [make_reservation(session, room, START + timedelta(weeks=w), status=ReservationStatus.CONFIRMED,
                                   series_id="s1") for w in range(5)]
    notices = []
    for week in range(3):
        now = weekly[week].start_at + timedelta(minutes=15)
        assert apply_deadline(session, config, weekly[week].id, now=now) == "released"
        notices.append(sorted(j.args[1] for j in queue("default").jobs if j.args[0] == weekly[week].id))

    assert notices == [["released"], ["released", "series_warning"], ["released", "series_ended"]]
    assert [session.get(Reservation, r.id).status for r in weekly] == [ReservationStatus.RELEASED] * 3 + [
        ReservationStatus.CANCELLED] * 2


def test_a_checked_in_occurrence_breaks_the_run(session, config, room):
    with unit_of_work(session):
        weekly = [make_reservation(session, room, START + timedelta(weeks=w), status=ReservationStatus.CONFIRMED,
                                   series_id="s2") for w in range(5)]
    apply_deadline(session, config, weekly[0].id, now=weekly[0].start_at + timedelta(minutes=15))
    check_in(session, config, weekly[1].id, person(ALICE), now=weekly[1].start_at)
    for week in (2, 3):
        apply_deadline(session, config, weekly[week].id, now=weekly[week].start_at + timedelta(minutes=15))

    assert session.get(Reservation, weekly[4].id).status == ReservationStatus.CONFIRMED


def test_end_early_frees_the_rest_and_keeps_the_booked_end(session, config, room, meeting):
    now = START + timedelta(minutes=25, seconds=30)

    ended = end_early(session, config, meeting.id, person(ALICE), now=now)

    assert (ended.end_at, ended.original_end_at, ended.ended_early_at, ended.status) == (
        START + timedelta(minutes=25), START + timedelta(hours=1), now, ReservationStatus.PENDING)
    assert find_clashes(session, room.id, [(now + timedelta(minutes=1), START + timedelta(hours=1))]) == {}
    with pytest.raises(booking.NotAllowed):
        end_early(session, config, meeting.id, person(BOB), now=now)  # an attendee may check in, not end


def test_end_early_only_while_the_meeting_runs(session, config, meeting):
    with pytest.raises(booking.InvalidBooking):
        end_early(session, config, meeting.id, person(ALICE), now=START - timedelta(minutes=1))


def test_extend_when_the_room_is_free_and_not_over_the_next_booking(session, config, room, meeting):
    with unit_of_work(session):
        make_reservation(session, room, START + timedelta(minutes=90), status=ReservationStatus.CONFIRMED)

    assert extend(session, config, meeting.id, 30, display_actor(room.id), now=START).end_at == (
        START + timedelta(minutes=90))
    with pytest.raises(booking.Conflict):
        extend(session, config, meeting.id, 15, person(ALICE), now=START)
    with pytest.raises(booking.InvalidBooking):
        extend(session, config, meeting.id, 45, person(ALICE), now=START)


def test_a_booking_made_in_google_may_be_ended_early_here_but_only_extended_there(session, config, room):
    with unit_of_work(session):
        theirs = make_reservation(session, room, START, status=ReservationStatus.CONFIRMED,
                                  source=ReservationSource.GOOGLE, google_event_id="ev1", organiser_email=ALICE)
    with pytest.raises(booking.NotAllowed, match="only its organiser can extend it"):
        extend(session, config, theirs.id, 15, person("admin@example.com", True), now=START + timedelta(minutes=5))
    with pytest.raises(booking.NotFound):  # not theirs to see, let alone end
        end_early(session, config, theirs.id, person("mallory@example.com"), now=START + timedelta(minutes=5))
    ended = end_early(session, config, theirs.id, display_actor(room.id), now=START + timedelta(minutes=5))
    # Ours would go back to pending for its Google write; this one stays confirmed: the room declines it.
    assert (ended.status, ended.end_at, ended.ended_early_at) == (
        ReservationStatus.CONFIRMED, START + timedelta(minutes=5), START + timedelta(minutes=5))

    # Google still says the booked end, and (after the decline) that the room declined: the mirror keeps it.
    event = read_event({"id": "ev1", "etag": '"9"', "status": "confirmed", "summary": "Planning",
                        "organizer": {"email": ALICE},
                        "start": {"dateTime": "2030-01-07T10:00:00Z"}, "end": {"dateTime": "2030-01-07T11:00:00Z"},
                        "attendees": [{"email": room.calendar_id, "resource": True, "responseStatus": "declined"}]},
                       room.calendar_id)
    assert decide(event, ended).action is Action.NONE


def test_the_mirror_never_revives_a_released_reservation(session, room):
    with unit_of_work(session):
        released = make_reservation(session, room, START, status=ReservationStatus.RELEASED,
                                    source=ReservationSource.GOOGLE, google_event_id="ev2", google_etag='"1"')
    event = read_event({"id": "ev2", "etag": '"2"', "status": "confirmed", "summary": "Planning",
                        "start": {"dateTime": "2030-01-07T10:00:00Z"}, "end": {"dateTime": "2030-01-07T11:00:00Z"},
                        "attendees": [{"email": room.calendar_id, "resource": True, "responseStatus": "declined"}]},
                       room.calendar_id)

    assert decide(event, released).action is Action.NONE


def test_the_check_in_button_is_offered_only_where_a_room_needs_it_and_while_the_window_is_open(
        session, config, room, meeting):
    with unit_of_work(session):
        relaxed = make_room(session)
        elsewhere = make_reservation(session, relaxed, START, status=ReservationStatus.CONFIRMED)

    assert checkin.can_check_in(meeting, config, START)
    assert not checkin.can_check_in(meeting, config, START - timedelta(minutes=11))
    assert not checkin.can_check_in(elsewhere, config, START)

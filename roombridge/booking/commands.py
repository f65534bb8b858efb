"""Booking commands: book, edit, cancel, retry the Google write.

Each command runs in its own unit of work (roombridge/unit_of_work.py), or joins the
caller's, and announces `ReservationChanged` for each reservation whose Google event must
change: the write job is queued only after the commit, so it never sees a reservation that
might still roll back. If queueing fails (Redis down), the reservation stays committed as
pending and the periodic `requeue_stale_pending` picks it up. A unit the database aborted to
break a deadlock runs again (`run_retrying`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from roombridge.booking.conflicts import (
    Conflict,
    OverlapRace,
    conflict_after_race,
    find_clashes,
    flush_refusing_overlap,
    settle_after,
)
from roombridge.booking.queries import can_change, can_see
from roombridge.booking.quotas import check_caps, take_invitations
from roombridge.booking.recurrence import (
    Recurrence,
    expand,
    occurrences_of,
    rrule_line,
    shift_until,
    shift_wall_time,
    with_until,
)
from roombridge.booking.rules import (
    InvalidBooking,
    NotAllowed,
    NotFound,
    Policy,
    add_error,
    aware_instant,
    bookable_room,
    capacity_warning,
    check_span,
    check_text,
    check_times,
    clean_attendees,
    normalise_email,
)
from roombridge.config import Config
from roombridge.models import Reservation, ReservationSeries, ReservationSource, ReservationStatus, audit
from roombridge.unit_of_work import ReservationChanged, announce, run_retrying, unit_of_work


@dataclass
class BookingRequest:
    room_id: int
    organiser_email: str
    title: str
    start: datetime
    end: datetime
    attendees: list[str] = field(default_factory=list)
    description: str = ""
    recurrence: Recurrence | None = None
    skip_conflicts: bool = False
    source: ReservationSource = ReservationSource.WEB


@dataclass
class BookingResult:
    reservations: list[Reservation]
    warnings: list[str] = field(default_factory=list)
    skipped: list[datetime] = field(default_factory=list)  # starts of occurrences left out for clashes



def book(session: Session, config: Config, request: BookingRequest, now: datetime | None = None) -> BookingResult:
    """Reserve a room (one occurrence or a series); the write to its Google calendar follows the commit."""
    try:
        return run_retrying(session, lambda: _book_once(session, config, request, now))
    except OverlapRace as race:
        raise conflict_after_race(session, race) from race.__cause__


def _book_once(session: Session, config: Config, request: BookingRequest, now: datetime | None) -> BookingResult:
    now = now or datetime.now(UTC)
    errors: dict[str, list[str]] = {}
    organiser = _organiser(request.organiser_email, errors)
    title, description = check_text(request.title, request.description, errors)
    attendees = clean_attendees(request.attendees, errors, config)
    room = bookable_room(session, request.room_id, errors)
    start = aware_instant("start", request.start, errors)
    end = aware_instant("end", request.end, errors)
    spans: list[tuple[datetime, datetime]] = []
    if room is not None and start is not None and end is not None:
        policy = Policy.for_room(room, config)
        if check_span(start, end, errors):
            spans = expand(request.recurrence, start, end, room.zone, config.MAX_OCCURRENCES, errors)
            for index, (occ_start, occ_end) in enumerate(spans):
                check_times(room, policy, occ_start, occ_end, now, errors,
                            field_name="start" if index == 0 else "recurrence")
    if errors:
        raise InvalidBooking(errors)
    assert room is not None

    clashes = find_clashes(session, room.id, spans)
    rule_spans = list(spans)
    skipped: list[datetime] = []
    if clashes:
        if not request.skip_conflicts or len(clashes) == len(spans):
            raise Conflict([c for index in sorted(clashes) for c in clashes[index]])
        skipped = [spans[i][0] for i in sorted(clashes)]
        spans = [span for i, span in enumerate(spans) if i not in clashes]
    check_caps(session, config, organiser, room, spans, now, new_reservations=len(spans))

    series_id = uuid.uuid4().hex if request.recurrence is not None else None
    if series_id is not None:
        # ONE recurring event in Google (roombridge/publish.py); its first occurrence is the rule's,
        # even when a clash left it out (an EXDATE).
        session.add(ReservationSeries(
            id=series_id, room_id=room.id, organiser_email=organiser, title=title, description=description,
            attendees=attendees, start_at=rule_spans[0][0], end_at=rule_spans[0][1],
            rule=rrule_line(request.recurrence, rule_spans[0][0], room.zone),
            exdates=[moment.isoformat() for moment in skipped], write_due=True, invitation_due=True))
    reservations = [
        Reservation(
            room=room,  # held, so the answer that shows the room after the commit reads no row again
            organiser_email=organiser,
            title=title,
            description=description,
            start_at=occ_start,
            end_at=occ_end,
            attendees=attendees,
            status=ReservationStatus.PENDING,
            source=request.source,
            series_id=series_id,
            occurrence_start_at=occ_start if series_id else None,
            # A series is announced once, as a whole, when its recurring event is written.
            invitation_due=series_id is None,
        )
        for occ_start, occ_end in spans
    ]
    session.add_all(reservations)
    flush_refusing_overlap(session, room.id, spans)
    for reservation in reservations:
        audit(session, organiser, "reservation.create", reservation, room_id=room.id,
              start=reservation.start_at.isoformat(), end=reservation.end_at.isoformat(),
              source=str(request.source), series_id=series_id)
        announce(session, ReservationChanged(reservation.id))
    # Last, once the booking is sure to be made: everyone is invited once (a series is one invitation).
    take_invitations(config, organiser, len({organiser, *attendees}))
    warnings = capacity_warning(room, organiser, attendees)
    if skipped:
        warnings.append(f"{len(skipped)} clashing occurrence(s) were left out.")
    return BookingResult(reservations=reservations, warnings=warnings, skipped=skipped)


def _organiser(email: str, errors: dict[str, list[str]]) -> str:
    try:
        return normalise_email(email)
    except (ValueError, TypeError):
        add_error(errors, "organiser_email", "The organiser needs a valid e-mail address.")
        return ""


_UNSET = object()


def _changeable(session: Session, reservation_id: int, actor_email: str, actor_is_admin: bool) -> Reservation:
    reservation = session.get(Reservation, reservation_id)
    if reservation is None or not can_see(reservation, actor_email, actor_is_admin):
        raise NotFound(f"no reservation {reservation_id}")
    if not can_change(reservation, actor_email, actor_is_admin):
        raise NotAllowed("Only the organiser or an admin may change this reservation.")
    return reservation


def edit(
    session: Session,
    config: Config,
    reservation_id: int,
    *,
    actor_email: str,
    actor_is_admin: bool,
    room_id=_UNSET,
    title=_UNSET,
    start=_UNSET,
    end=_UNSET,
    attendees=_UNSET,
    description=_UNSET,
    now: datetime | None = None,
    scope: str = "this",
) -> BookingResult:
    """Change a reservation; every rule is checked again on the result. The Google update follows the commit.

    For an occurrence of a series, `scope` says which: `this` one (an exception of its instance in
    Google), `following` (this and the later ones: the series is ended before it and a new one
    starts from it) or `all` of its occurrences. A time change moves each by the same wall-clock shift.
    """
    freed: set[int] = set()  # rooms where the edit may have freed a slot
    changes = dict(room_id=room_id, title=title, start=start, end=end, attendees=attendees, description=description)
    if scope not in SCOPES:
        raise InvalidBooking({"scope": [f"One of {', '.join(SCOPES)}."]})
    try:
        if scope == "this":
            work = lambda: _edit_once(  # noqa: E731
                session, config, reservation_id, actor_email=actor_email, actor_is_admin=actor_is_admin,
                now=now, freed=freed, **changes)
        else:
            work = lambda: _edit_series_once(  # noqa: E731
                session, config, reservation_id, scope, actor_email=actor_email, actor_is_admin=actor_is_admin,
                now=now, freed=freed, changes=changes)
        result = run_retrying(session, work)
    except OverlapRace as race:
        raise conflict_after_race(session, race) from race.__cause__
    if freed:
        # The old slot may be free now for a Google booking kept as a conflict.
        settle_after(session, freed, actor_email.strip().lower())
    return result


def _edit_once(session: Session, config: Config, reservation_id: int, *, actor_email: str, actor_is_admin: bool,
               room_id, title, start, end, attendees, description, now: datetime | None,
               freed: set[int], as_part_of_series: bool = False) -> BookingResult:
    now = now or datetime.now(UTC)
    reservation = _changeable(session, reservation_id, actor_email, actor_is_admin)
    if reservation.source == ReservationSource.GOOGLE:
        raise NotAllowed("This booking was made in Google Calendar; change it there.")
    if not reservation.is_live:
        raise InvalidBooking({"status": [f"A {reservation.status} reservation cannot be changed."]})

    errors: dict[str, list[str]] = {}
    new_title, new_description = check_text(
        reservation.title if title is _UNSET else title,
        reservation.description if description is _UNSET else description,
        errors,
    )
    new_attendees = (
        list(reservation.attendees or []) if attendees is _UNSET else clean_attendees(attendees, errors, config)
    )
    room = reservation.room if room_id is _UNSET else bookable_room(session, room_id, errors)
    new_start = reservation.start_at if start is _UNSET else aware_instant("start", start, errors)
    new_end = reservation.end_at if end is _UNSET else aware_instant("end", end, errors)
    if room is not None and not room.in_scope:
        add_error(errors, "room_id", f"{room.name} is not bookable here.")
    if room is not None and new_start is not None and new_end is not None:
        when_changed = (new_start, new_end, room.id) != (reservation.start_at, reservation.end_at, reservation.room_id)
        # A meeting under way may still get a new title or attendees; notice rules apply to moves.
        check_times(room, Policy.for_room(room, config), new_start, new_end, now, errors,
                    check_notice=when_changed)
    if errors:
        raise InvalidBooking(errors)
    assert room is not None and new_start is not None and new_end is not None

    span = [(new_start, new_end)]
    clashes = find_clashes(session, room.id, span, exclude_ids=[reservation.id])
    if clashes:
        raise Conflict(clashes[0])
    moved = (new_start, new_end, room.id) != (reservation.start_at, reservation.end_at, reservation.room_id)
    if moved and not actor_is_admin:
        check_caps(session, config, reservation.organiser_email, room, span, now, new_reservations=0,
                   editing=reservation.id)

    removed = [a for a in (reservation.attendees or []) if a not in new_attendees]
    changes = {}
    for name, value in (("room_id", room.id), ("title", new_title), ("description", new_description),
                        ("start_at", new_start), ("end_at", new_end), ("attendees", new_attendees)):
        if getattr(reservation, name) != value:
            old = getattr(reservation, name)
            changes[name] = [_jsonable(old), _jsonable(value)]
            setattr(reservation, name, value)
    if changes:
        reservation.status = ReservationStatus.PENDING
        reservation.status_reason = None
        if TELL_PEOPLE & changes.keys() and not as_part_of_series:
            # As calendar clients do: people are sent an update when the time, the room or who
            # is invited changes, not for a new title or description.
            reservation.invitation_due = True
            if not actor_is_admin:
                take_invitations(config, reservation.organiser_email,
                                 len({reservation.organiser_email, *new_attendees}) + len(removed))
        audit(session, actor_email.strip().lower(), "reservation.edit", reservation, changes=changes)
    flush_refusing_overlap(session, room.id, span, [reservation_id])
    if changes:
        announce(session, ReservationChanged(reservation.id))
        if {"start_at", "end_at", "room_id"} & changes.keys():
            freed.update({reservation.room_id, *changes.get("room_id", [])})
    return BookingResult(
        reservations=[reservation],
        warnings=capacity_warning(room, reservation.organiser_email, new_attendees),
    )


TELL_PEOPLE = frozenset({"start_at", "end_at", "room_id", "attendees"})


def _jsonable(value):
    return value.isoformat() if isinstance(value, datetime) else value


def cancel(session: Session, config: Config, reservation_id: int, *, actor_email: str,
           actor_is_admin: bool, scope: str = "this") -> Reservation:
    """Cancel a reservation; the deletion of its Google event follows the commit. Cancelling twice is harmless.

    For an occurrence of a series, `scope` says which: `this` one (a cancelled instance in Google),
    `following` (the series ends before it) or `all` (the whole recurring event goes).
    """
    actor = actor_email.strip().lower()
    if scope not in SCOPES:
        raise InvalidBooking({"scope": [f"One of {', '.join(SCOPES)}."]})
    with unit_of_work(session):
        reservation = _changeable(session, reservation_id, actor_email, actor_is_admin)
        if reservation.source == ReservationSource.GOOGLE:
            raise NotAllowed("This booking was made in Google Calendar; cancel it there.")
        targets = [reservation] if scope == "this" else _scope_targets(session, reservation, scope)
        if scope == "all":
            # What already happened stays as it was: "all" is every occurrence not yet over.
            now = datetime.now(UTC)
            targets = [t for t in targets if t.end_at > now] or [reservation]
        series = _series_row(session, reservation) if scope != "this" else None
        if series is not None:
            point = min(t.occurrence_start_at for t in targets)
            if point <= series.start_at:
                series.write_due = True  # no live occurrence left: the recurring event is deleted
            else:
                _end_series_before(session, series, point)
        for target in targets:
            if target.status in (ReservationStatus.CANCELLED, ReservationStatus.RELEASED):
                continue
            target.status = ReservationStatus.CANCELLED
            target.status_reason = f"cancelled by {actor}"
            audit(session, actor, "reservation.cancel", target, scope=scope)
            announce(session, ReservationChanged(target.id))
    settle_after(session, [reservation.room_id], actor)
    return reservation


SCOPES = ("this", "following", "all")


def _series_row(session: Session, reservation: Reservation) -> ReservationSeries | None:
    if not reservation.series_id or reservation.occurrence_start_at is None:
        return None
    return session.get(ReservationSeries, reservation.series_id)


def _scope_targets(session: Session, reservation: Reservation, scope: str) -> list[Reservation]:
    """The occurrences an edit or cancel of `scope` covers, soonest first (a single booking: itself)."""
    if not reservation.series_id:
        return [reservation]
    query = sa.select(Reservation).where(Reservation.series_id == reservation.series_id)
    if scope == "following" and reservation.occurrence_start_at is not None:
        query = query.where(Reservation.occurrence_start_at >= reservation.occurrence_start_at)
    elif scope == "following":
        query = query.where(Reservation.start_at >= reservation.start_at)
    return list(session.scalars(query.order_by(Reservation.start_at, Reservation.id)))


def _end_series_before(session: Session, series: ReservationSeries, point: datetime) -> None:
    """End the series' rule before `point` (an occurrence's start in the rule): its event is patched with UNTIL."""
    series.rule = with_until(series.rule, point - timedelta(seconds=1))
    series.exdates = [t for t in series.exdates or [] if datetime.fromisoformat(t) < point]
    series.write_due = True
    series.invitation_due = True  # an updated REQUEST with UNTIL ends it in people's calendars


def _split_series(session: Session, config: Config, series: ReservationSeries, point: datetime,
                  targets: list[Reservation]) -> ReservationSeries:
    """"This and following": the series ends before `point` and a new one (a new recurring event)
    starts there with the rest of the rule; `targets` become its occurrences."""
    zone = series.room.zone
    rule_starts = occurrences_of(series.rule, series.start_at, zone, config.MAX_OCCURRENCES * 10)
    new = ReservationSeries(
        id=uuid.uuid4().hex, room_id=series.room_id, organiser_email=series.organiser_email, title=series.title,
        description=series.description, attendees=list(series.attendees or []), start_at=point,
        end_at=point + series.duration, rule=with_until(series.rule, rule_starts[-1]),
        exdates=[t for t in series.exdates or [] if datetime.fromisoformat(t) >= point],
        write_due=True, invitation_due=True)
    session.add(new)
    _end_series_before(session, series, point)
    earlier = session.scalar(sa.select(Reservation.id).where(
        Reservation.series_id == series.id, Reservation.occurrence_start_at < point)
        .order_by(Reservation.occurrence_start_at.desc()).limit(1))
    if earlier is not None:
        announce(session, ReservationChanged(earlier))  # its publish patches the ended series
    for target in targets:
        # Instances of the new event from now on; the old ones go when the old rule is cut.
        target.series_id = new.id
        target.google_event_id = target.google_calendar_id = target.google_recurring_event_id = None
        target.instance_exception = False
    return new


def _edit_series_once(session: Session, config: Config, reservation_id: int, scope: str, *, actor_email: str,
                      actor_is_admin: bool, now: datetime | None, freed: set[int], changes: dict) -> BookingResult:
    """An edit of this and the following, or of all, occurrences of a series."""
    changes = dict(changes)  # a retried unit starts again from the same request
    reservation = _changeable(session, reservation_id, actor_email, actor_is_admin)
    if not reservation.series_id:  # a single booking: the scope is itself
        return _edit_once(session, config, reservation_id, actor_email=actor_email, actor_is_admin=actor_is_admin,
                          now=now, freed=freed, **changes)
    if reservation.source == ReservationSource.GOOGLE:
        raise NotAllowed("This booking was made in Google Calendar; change it there.")
    if not reservation.is_live:
        raise InvalidBooking({"status": [f"A {reservation.status} reservation cannot be changed."]})
    zone = reservation.room.zone
    start, end = changes.pop("start"), changes.pop("end")
    start_shift = end_shift = timedelta(0)
    if start is not _UNSET and start is not None:
        start_shift = _wall(start, zone) - _wall(reservation.start_at, zone)
    if end is not _UNSET and end is not None:
        end_shift = _wall(end, zone) - _wall(reservation.end_at, zone)
    if abs(start_shift) >= timedelta(days=1) or abs(end_shift) >= timedelta(days=1):
        raise InvalidBooking({"start": ["A series moves within its days; to repeat on other days, cancel it and "
                                        "book a new one."]})
    series = _series_row(session, reservation)
    targets = [t for t in _scope_targets(session, reservation, scope)]
    if series is not None:
        point = reservation.occurrence_start_at
        if scope == "following" and point > series.start_at:
            series = _split_series(session, config, series, point, targets)
        moved = start_shift or end_shift
        if changes["room_id"] is not _UNSET:
            series.room_id = changes["room_id"]
        if moved:
            series.start_at = shift_wall_time(series.start_at, start_shift, zone)
            series.end_at = shift_wall_time(series.end_at, end_shift, zone)
            series.rule = shift_until(series.rule, start_shift)
            for target in targets:
                # The rule's times move: every instance id changes with them.
                target.occurrence_start_at = shift_wall_time(target.occurrence_start_at, start_shift, zone)
                target.google_event_id = None
                target.instance_exception = False
            series.exdates = [shift_wall_time(datetime.fromisoformat(t), start_shift, zone).isoformat()
                              for t in series.exdates or []]
        series.write_due = True
        if moved or changes["room_id"] is not _UNSET or changes["attendees"] is not _UNSET:
            series.invitation_due = True
    results = []
    now = now or datetime.now(UTC)
    for target in targets:
        if not target.is_live or target.end_at <= now:
            continue  # what already happened stays as it was
        if series is not None:
            target.status = ReservationStatus.PENDING  # written again, against the series' event
        fields = dict(changes, start=_UNSET, end=_UNSET)
        if start_shift:
            fields["start"] = shift_wall_time(target.start_at, start_shift, zone)
        if end_shift:
            fields["end"] = shift_wall_time(target.end_at, end_shift, zone)
        result = _edit_once(session, config, target.id, actor_email=actor_email, actor_is_admin=actor_is_admin,
                            now=now, freed=freed, as_part_of_series=series is not None, **fields)
        results.append(result)
    if series is not None:
        before = list(series.attendees or [])
        for name in ("title", "description", "attendees"):
            if changes[name] is not _UNSET:  # as the rules cleaned it on the occurrence
                setattr(series, name, list(reservation.attendees or []) if name == "attendees"
                        else getattr(reservation, name))
        removed = [a for a in before if a not in (series.attendees or [])]
        if series.invitation_due and not actor_is_admin:
            # One update of the whole series to everyone, and one CANCEL to each person dropped
            # (the mail job sends them: roombridge/invitations.py, `series_due_mails`).
            take_invitations(config, series.organiser_email,
                             len({series.organiser_email, *(series.attendees or [])}) + len(removed))
        session.flush()
        for target in targets:
            if target.status == ReservationStatus.PENDING:
                announce(session, ReservationChanged(target.id))
    first = next((r for r in results if r.reservations[0].id == reservation_id), None) or (
        results[0] if results else BookingResult(reservations=[reservation]))
    return BookingResult(reservations=[reservation], warnings=first.warnings)


def _wall(instant: datetime, zone) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def retry_write(session: Session, reservation_id: int, *, actor_email: str, actor_is_admin: bool) -> Reservation:
    """Try the Google write of a failed reservation again (failed -> pending, re-queued)."""
    with unit_of_work(session):
        reservation = _changeable(session, reservation_id, actor_email, actor_is_admin)
        if reservation.status not in (ReservationStatus.FAILED, ReservationStatus.PENDING):
            raise InvalidBooking({"status": [f"Only a failed or pending reservation can be retried, not a "
                                             f"{reservation.status} one."]})
        if reservation.status == ReservationStatus.FAILED:
            reservation.status = ReservationStatus.PENDING
            reservation.status_reason = None
            audit(session, actor_email.strip().lower(), "reservation.retry", reservation)
        announce(session, ReservationChanged(reservation.id))
    return reservation

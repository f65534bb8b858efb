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
from datetime import UTC, datetime

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
from roombridge.booking.recurrence import Recurrence, expand
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
from roombridge.models import Reservation, ReservationSource, ReservationStatus, audit
from roombridge.unit_of_work import InvitationDue, ReservationChanged, announce, run_retrying, unit_of_work


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
    skipped: list[datetime] = []
    if clashes:
        if not request.skip_conflicts or len(clashes) == len(spans):
            raise Conflict([c for index in sorted(clashes) for c in clashes[index]])
        skipped = [spans[i][0] for i in sorted(clashes)]
        spans = [span for i, span in enumerate(spans) if i not in clashes]
    check_caps(session, config, organiser, room, spans, now, new_reservations=len(spans))

    series_id = uuid.uuid4().hex if request.recurrence is not None else None
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
            invitation_due=True,
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
    # Last, once the booking is sure to be made: each occurrence invites everyone.
    take_invitations(config, organiser, len(reservations) * len({organiser, *attendees}))
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
) -> BookingResult:
    """Change a reservation; every rule is checked again on the result. The Google update follows the commit."""
    freed: set[int] = set()  # rooms where the edit may have freed a slot
    try:
        result = run_retrying(session, lambda: _edit_once(
            session, config, reservation_id, actor_email=actor_email, actor_is_admin=actor_is_admin,
            room_id=room_id, title=title, start=start, end=end, attendees=attendees, description=description,
            now=now, freed=freed))
    except OverlapRace as race:
        raise conflict_after_race(session, race) from race.__cause__
    if freed:
        # The old slot may be free now for a Google booking kept as a conflict.
        settle_after(session, freed, actor_email.strip().lower())
    return result


def _edit_once(session: Session, config: Config, reservation_id: int, *, actor_email: str, actor_is_admin: bool,
               room_id, title, start, end, attendees, description, now: datetime | None,
               freed: set[int]) -> BookingResult:
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
        if TELL_PEOPLE & changes.keys():
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
        if removed and reservation.google_event_id:
            # Attendees dropped by the edit are told they are no longer invited (room mode mail).
            announce(session, InvitationDue(reservation.id, "CANCEL", tuple(removed)))
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
           actor_is_admin: bool) -> Reservation:
    """Cancel a reservation; the deletion of its Google event follows the commit. Cancelling twice is harmless."""
    actor = actor_email.strip().lower()
    with unit_of_work(session):
        reservation = _changeable(session, reservation_id, actor_email, actor_is_admin)
        if reservation.status == ReservationStatus.CANCELLED:
            return reservation
        if reservation.source == ReservationSource.GOOGLE:
            raise NotAllowed("This booking was made in Google Calendar; cancel it there.")
        reservation.status = ReservationStatus.CANCELLED
        reservation.status_reason = f"cancelled by {actor}"
        audit(session, actor, "reservation.cancel", reservation)
        announce(session, ReservationChanged(reservation.id))
    settle_after(session, [reservation.room_id], actor)
    return reservation


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

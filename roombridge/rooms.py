"""Which rooms are in scope: add (after asking Google what we may do there), edit, remove.

A room enters scope only when Google confirms the service account may make changes to
events on its calendar; otherwise it is refused with a message naming what is missing.
Entering scope opens its watch channel and requests its first full sync, channel first,
so that nothing changed between the two goes unnoticed. Leaving scope stops its channels
before the room leaves the gateway's allowlist, and syncing stops. Its future reservations
are kept, or cancelled (`leave_scope`): their events are deleted while the room is still in
scope, since the allowlist refuses its calendar afterwards, and the room leaves scope only
once every one is gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from roombridge import channels, publish
from roombridge.booking.rules import ROOM_FIELDS, check_room_fields
from roombridge.config import Config
from roombridge.gcal import AccessCheck, CalendarGateway, GoogleError, RetriableGoogleError, is_room_calendar
from roombridge.models import (
    LIVE_STATUSES,
    Reservation,
    ReservationSource,
    ReservationStatus,
    Room,
    RoomHealth,
    WatchChannel,
    audit,
)
from roombridge.notifications import request_sync
from roombridge.unit_of_work import outside_units, unit_of_work

log = logging.getLogger(__name__)

WRITE_ROLES = ("writer", "owner")
ACCESS_PROBLEM_PREFIX = "Access check: "
EDITABLE_FIELDS = ROOM_FIELDS


class RoomRefused(ValueError):
    """The room cannot be added or changed; the message says why, for the admin to read."""


@dataclass
class AddedRoom:
    room: Room
    channel: WatchChannel | None
    channel_problem: str | None  # the channel could not be opened yet; the renewal job retries


def normalise_calendar_id(raw: str) -> str:
    return (raw or "").strip().lower()


def find_room(session: Session, calendar_id: str) -> Room | None:
    return session.scalar(sa.select(Room).where(Room.calendar_id == normalise_calendar_id(calendar_id)))


def rooms_in_scope(session: Session) -> list[Room]:
    return list(session.scalars(sa.select(Room).where(Room.in_scope.is_(True)).order_by(Room.name, Room.id)))


def _validated(changes: dict) -> dict:
    """Check and normalise editable fields; RoomRefused names the first bad one."""
    clean, errors = check_room_fields(changes)
    if errors:
        raise RoomRefused(next(iter(errors.values()))[0])
    return clean


def access_problem(check: AccessCheck) -> str | None:
    """What is missing for the app to work on the calendar, or None when nothing is."""
    if check.ok and check.role in WRITE_ROLES:
        return None
    if check.problem:
        return check.problem
    return f"the service account has '{check.role}' access; it needs 'Make changes to events'"


def add_room(session: Session, gateway: CalendarGateway, config: Config, calendar_id: str, *, name: str,
             now: datetime, actor: str = "system", capacity: int | None = None, building: str | None = None,
             floor: str | None = None, features=None, time_zone: str = "UTC") -> AddedRoom:
    """Bring a room calendar into scope; refused with RoomRefused unless Google says we may write to it."""
    outside_units(session)
    calendar_id = normalise_calendar_id(calendar_id)
    if not is_room_calendar(calendar_id):
        raise RoomRefused(f"{calendar_id or 'That'} is not a room calendar address "
                          "(they end in @resource.calendar.google.com).")
    details = _validated(dict(name=name, capacity=capacity, building=building, floor=floor,
                              features=features, time_zone=time_zone))
    with unit_of_work(session, write=False):
        room = find_room(session, calendar_id)
    if room is not None and room.in_scope:
        raise RoomRefused(f"{calendar_id} is already in scope as {room.name!r}.")
    try:
        check = gateway.check_access(calendar_id)
    except RetriableGoogleError as error:
        raise RoomRefused(f"Google could not be asked about {calendar_id} just now ({error}); try again.") from error
    problem = access_problem(check)
    if problem:
        raise RoomRefused(f"{calendar_id} was not added: {problem}.")
    with unit_of_work(session):
        room = find_room(session, calendar_id)  # again, inside the write: it may have been added meanwhile
        if room is not None and room.in_scope:
            raise RoomRefused(f"{calendar_id} is already in scope as {room.name!r}.")
        if room is None:
            room = Room(calendar_id=calendar_id, **details)
            session.add(room)
        else:
            for key, value in details.items():
                setattr(room, key, value)
        room.in_scope, room.access_role, room.health, room.health_error = True, check.role, None, None
        session.flush()
        audit(session, actor, "room.added", room, calendar_id=calendar_id, role=check.role)

    # The channel before the first full sync: a change made in between is still reported.
    channel, channel_problem = None, None
    try:
        channel = channels.create_channel(session, gateway, room, config, now, actor)
    except (channels.ChannelRefused, GoogleError) as error:
        channel_problem = str(error)
        log.warning("room %s added without a channel for now: %s", calendar_id, error)
    request_sync(room.id, full=True)
    return AddedRoom(room, channel, channel_problem)


def edit_room(session: Session, room: Room, actor: str = "system", **changes) -> Room:
    """Change a room's description or booking policy (not its calendar: remove and add for that)."""
    clean = _validated(changes)
    with unit_of_work(session):
        before = {k: getattr(room, k) for k in clean}
        for key, value in clean.items():
            setattr(room, key, value)
        changed = {k: [before[k], v] for k, v in clean.items() if before[k] != v}
        if changed:
            audit(session, actor, "room.edited", room, changes=changed)
    return room


def remove_room(session: Session, gateway: CalendarGateway, room: Room, now: datetime,
                actor: str = "system") -> list[WatchChannel]:
    """Take the room out of scope: stop its channels, then drop it from the allowlist.

    Returns the channels whose stop failed; they are kept as stop_pending and the periodic
    job retries them (channels.stop names no calendar, so it works for a room out of scope).
    """
    pending = channels.stop_room_channels(session, gateway, room, now, actor)
    with unit_of_work(session):
        room.in_scope = False
        audit(session, actor, "room.removed", room, calendar_id=room.calendar_id,
              channels_pending_stop=[c.id for c in pending])
    return pending


@dataclass
class Removal:
    """What `leave_scope` did."""

    removed: bool  # False: some events could not be deleted, and the room stays in scope
    kept: int = 0  # future reservations kept: their events stay on the room's calendar
    cancelled: int = 0  # future reservations cancelled, their events deleted
    not_deleted: list[tuple[int, str]] = field(default_factory=list)  # (reservation id, why)
    channels_pending_stop: list[WatchChannel] = field(default_factory=list)


def _future(room: Room, now: datetime):
    """Our reservations of `room` that start from `now` on and still hold it, or whose event still stands."""
    return sa.select(Reservation.id).where(
        Reservation.room_id == room.id,
        Reservation.source != ReservationSource.GOOGLE,  # people's own Google bookings are theirs
        Reservation.start_at >= now,
        sa.or_(Reservation.status.in_(LIVE_STATUSES),
               sa.and_(Reservation.status == ReservationStatus.CANCELLED,
                       Reservation.google_calendar_id == room.calendar_id)),
    ).order_by(Reservation.start_at)


def future_reservations(session: Session, room: Room, now: datetime) -> int:
    """How many future reservations leaving scope would keep or cancel (for the admin's question)."""
    return len(session.scalars(_future(room, now)).all())


def leave_scope(session: Session, config: Config, gateway: CalendarGateway, room: Room, now: datetime, *,
                cancel_future: bool, actor: str = "system") -> Removal:
    """Take the room out of scope, keeping or cancelling its future reservations.

    Cancelling deletes each event now, while the gateway still allows the room's calendar
    (room mode: each attendee is mailed a CANCEL); if any deletion fails, the room stays in
    scope and the failures are returned, so the same call can be made again.
    """
    outside_units(session)
    with unit_of_work(session, write=False):
        ids = list(session.scalars(_future(room, now)))
    if not cancel_future:
        if ids:
            log.info("room %s leaves scope keeping %d future reservation(s)", room.calendar_id, len(ids))
        return Removal(removed=True, kept=len(ids), channels_pending_stop=remove_room(session, gateway, room, now,
                                                                                     actor))
    with unit_of_work(session):
        for reservation in session.scalars(sa.select(Reservation).where(Reservation.id.in_(ids))):
            if reservation.status != ReservationStatus.CANCELLED:
                reservation.status = ReservationStatus.CANCELLED
                reservation.status_reason = f"cancelled: {room.name} was removed from scope by {actor}"
                audit(session, actor, "reservation.cancel", reservation, reason="room removed from scope")
    not_deleted = []
    for reservation_id in ids:
        try:
            outcome = publish.publish_reservation(session, config, gateway, reservation_id)
        except GoogleError as error:
            not_deleted.append((reservation_id, str(error)))
            continue
        if outcome == "failed":
            with unit_of_work(session, write=False):
                not_deleted.append((reservation_id, session.get(Reservation, reservation_id).status_reason or ""))
    if not_deleted:
        log.warning("room %s stays in scope: %d event(s) could not be deleted", room.calendar_id, len(not_deleted))
        return Removal(removed=False, cancelled=len(ids) - len(not_deleted), not_deleted=not_deleted)
    return Removal(removed=True, cancelled=len(ids), channels_pending_stop=remove_room(session, gateway, room, now,
                                                                                      actor))


@dataclass(frozen=True)
class AccessReport:
    room: Room
    role: str | None
    problem: str | None  # None: the room works


def check_rooms_access(session: Session, gateway: CalendarGateway, rooms: list[Room]) -> list[AccessReport]:
    """Ask Google, room by room, what the service account may do; record it on each room."""
    outside_units(session)
    reports, answers = [], []
    for room in rooms:
        try:
            check = gateway.check_access(room.calendar_id)
        except GoogleError as error:
            reports.append(AccessReport(room, room.access_role, f"could not ask Google: {error}"))
            continue
        answers.append((room, check, access_problem(check)))
        reports.append(AccessReport(room, check.role, answers[-1][2]))
    with unit_of_work(session):
        for room, check, problem in answers:
            room.access_role = check.role
            if problem:
                room.health, room.health_error = RoomHealth.NO_ACCESS, ACCESS_PROBLEM_PREFIX + problem
            elif room.health == RoomHealth.NO_ACCESS:
                room.health, room.health_error = None, None
    return reports

"""Room displays and lobby screens: paired by a secret link, what they show and may do.

A display link is ``rd_`` + 43 url-safe random characters; only its SHA-256 is stored (as
for API tokens), so one indexed lookup finds it and a database leak reveals no link. An
admin creates one per room (the console or `flask --app wsgi displays create ROOM_EMAIL`)
and may revoke it; a revoked link opens nothing. The link is the display's only credential:
it acts for its own room only (roombridge/checkin.py `display_actor`), never as a person.

`board` is what the door shows, computed in the room's zone; it changes only when something
a passer-by would see changes (a meeting starts or ends, check-in opens, a booking is made),
so the display's polling is answered "not modified" almost always.

A lobby screen's link (``lb_`` + 43 characters, stored the same way) opens one building's
overview (`lobby_board`): every in-scope room of that building, free or busy and until
when, never a title or an organiser. It can do nothing else: no action, no other building,
no other page. An unattended screen needs no person's sign-in, so no session is left open
on a public screen.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from roombridge import booking, checkin
from roombridge.api_tokens import hash_token
from roombridge.booking.rules import check_times
from roombridge.config import Config
from roombridge.models import LIVE_STATUSES, LobbyDisplay, Reservation, ReservationSource, Room, RoomDisplay, audit
from roombridge.unit_of_work import unit_of_work

PREFIX = "rd_"
LOBBY_PREFIX = "lb_"
WALK_UP_MINUTES = (15, 30, 60)
WALK_UP_TITLE = "Walk-up booking"
NEXT_SHOWN = 4  # the door has room for this many of the day's next meetings without scrolling
# Writing last_seen_at on every poll would turn each read into a write; every few minutes says enough.
SEEN_RESOLUTION = timedelta(minutes=5)


class UnknownRoom(LookupError):
    """No room with that calendar address."""


@dataclass(frozen=True)
class NewDisplay:
    token: str  # the only time the secret exists outside the display
    record: RoomDisplay


def _room_by_email(session: Session, room_email: str) -> Room:
    room = session.scalar(sa.select(Room).where(Room.calendar_id == room_email.strip().lower()))
    if room is None:
        raise UnknownRoom(f"no room {room_email}")
    return room


def _new_token(prefix: str) -> tuple[str, dict]:
    """A new secret link token, and the columns that store it (its hash, and a prefix to tell it apart)."""
    token = prefix + secrets.token_urlsafe(32)
    return token, {"token_hash": hash_token(token), "prefix": token[: len(prefix) + 6]}


def create(session: Session, room_email: str, *, actor: str = "system") -> NewDisplay:
    """A new display link for the room (other links of the room stay valid until revoked)."""
    token, stored = _new_token(PREFIX)
    with unit_of_work(session):
        room = _room_by_email(session, room_email)
        record = RoomDisplay(room_id=room.id, created_by=actor, **stored)
        session.add(record)
        session.flush()
        audit(session, actor, "display.create", record, room_id=room.id, prefix=record.prefix)
    return NewDisplay(token, record)


def _revoke(session: Session, query, actor: str, action: str, **details) -> int:
    records = session.scalars(query).all()
    now = datetime.now(UTC)
    for record in records:
        record.revoked_at = now
        audit(session, actor, action, record, prefix=record.prefix, **details)
    return len(records)


def revoke(session: Session, room_email: str, *, prefix: str | None = None, actor: str = "system") -> int:
    """Revoke the room's live display links (only the one with `prefix`, if given); returns how many."""
    with unit_of_work(session):
        room = _room_by_email(session, room_email)
        query = sa.select(RoomDisplay).where(RoomDisplay.room_id == room.id, RoomDisplay.revoked_at.is_(None))
        if prefix:
            query = query.where(RoomDisplay.prefix == prefix)
        return _revoke(session, query, actor, "display.revoke", room_id=room.id)


def display_url(config: Config, token: str) -> str:
    """The full address a display opens, on WEBHOOK_BASE_URL's host (the public address of the web process)."""
    return f"{config.WEBHOOK_BASE_URL.rstrip('/')}/display/{token}"


def live_displays(session: Session, room_id: int) -> list[RoomDisplay]:
    return list(session.scalars(sa.select(RoomDisplay).where(RoomDisplay.room_id == room_id,
                                                             RoomDisplay.revoked_at.is_(None))
                                .order_by(RoomDisplay.created_at)))


def _live_record(session: Session, model, prefix: str, token: str | None, now: datetime | None):
    """The unrevoked link record of a token, its last sighting noted (coarsely), else None."""
    if not token or not token.startswith(prefix) or len(token) > 100:
        return None
    record = session.scalar(sa.select(model).where(model.token_hash == hash_token(token)))
    if record is None or record.revoked_at is not None:
        return None
    now = now or datetime.now(UTC)
    if record.last_seen_at is None or now - record.last_seen_at >= SEEN_RESOLUTION:
        with unit_of_work(session):
            session.execute(sa.update(model).where(model.id == record.id).values(last_seen_at=now))
    return record


def room_of(session: Session, token: str | None, now: datetime | None = None) -> Room | None:
    """The in-scope room a live display link opens, else None."""
    record = _live_record(session, RoomDisplay, PREFIX, token, now)
    return record.room if record is not None and record.room.in_scope else None


# --- lobby screens ----------------------------------------------------------------------------------


class UnknownBuilding(LookupError):
    """No in-scope room in that building."""


@dataclass(frozen=True)
class NewLobby:
    token: str  # the only time the secret exists outside the screen
    record: LobbyDisplay


def _building(session: Session, building: str) -> str:
    """The building's name as the rooms spell it (case-insensitive), if it has an in-scope room."""
    name = session.scalar(sa.select(Room.building).where(
        sa.func.lower(Room.building) == building.strip().lower(), Room.in_scope.is_(True)).limit(1))
    if name is None:
        raise UnknownBuilding(f"no room in a building named {building!r}")
    return name


def create_lobby(session: Session, building: str, *, actor: str = "system") -> NewLobby:
    """A new lobby-screen link for the building (its other links stay valid until revoked)."""
    token, stored = _new_token(LOBBY_PREFIX)
    with unit_of_work(session):
        record = LobbyDisplay(building=_building(session, building), created_by=actor, **stored)
        session.add(record)
        session.flush()
        audit(session, actor, "lobby.create", record, building=record.building, prefix=record.prefix)
    return NewLobby(token, record)


def revoke_lobby(session: Session, building: str, *, prefix: str | None = None, actor: str = "system") -> int:
    """Revoke the building's live lobby links (only the one with `prefix`, if given); returns how many."""
    with unit_of_work(session):
        query = sa.select(LobbyDisplay).where(sa.func.lower(LobbyDisplay.building) == building.strip().lower(),
                                              LobbyDisplay.revoked_at.is_(None))
        if prefix:
            query = query.where(LobbyDisplay.prefix == prefix)
        return _revoke(session, query, actor, "lobby.revoke", building=building)


def live_lobbies(session: Session) -> list[LobbyDisplay]:
    return list(session.scalars(sa.select(LobbyDisplay).where(LobbyDisplay.revoked_at.is_(None))
                                .order_by(LobbyDisplay.building, LobbyDisplay.created_at)))


def lobby_url(config: Config, token: str) -> str:
    """The full address a lobby screen opens, on WEBHOOK_BASE_URL's host."""
    return f"{config.WEBHOOK_BASE_URL.rstrip('/')}/display/lobby/{token}"


def building_of(session: Session, token: str | None, now: datetime | None = None) -> str | None:
    """The building a live lobby link opens, else None."""
    record = _live_record(session, LobbyDisplay, LOBBY_PREFIX, token, now)
    return record.building if record is not None else None


def lobby_board(session: Session, building: str | None, now: datetime) -> dict:
    """Every in-scope room of the building (all buildings: None), free or busy now and until when.

    Only free/busy and times, never titles or organisers: the lobby is a public screen.
    """
    query = sa.select(Room).where(Room.in_scope.is_(True))
    if building:
        query = query.where(Room.building == building)
    rooms = list(session.scalars(query.order_by(Room.floor, Room.name)))
    ids = [r.id for r in rooms]
    # Today's live bookings of these rooms from now on, in one query; "busy until" follows
    # back-to-back bookings, so a room booked 10-11 and 11-12 is busy until 12.
    upcoming: dict[int, list[tuple[datetime, datetime]]] = {i: [] for i in ids}
    if ids:
        rows = session.execute(
            sa.select(Reservation.room_id, Reservation.start_at, Reservation.end_at)
            .where(Reservation.room_id.in_(ids), Reservation.status.in_(LIVE_STATUSES),
                   Reservation.end_at > now, Reservation.start_at < now + timedelta(hours=24))
            .order_by(Reservation.start_at)
        )
        for room_id, start_at, end_at in rows:
            upcoming[room_id].append((start_at, end_at))
    shown = []
    for room in rooms:
        busy_until, next_start = None, None
        for start_at, end_at in upcoming[room.id]:
            if busy_until is None and start_at > now:
                next_start = start_at
                break
            if busy_until is not None and start_at > busy_until:
                break
            busy_until = max(busy_until or end_at, end_at)
        zone = room.zone
        shown.append({
            "id": room.id, "name": room.name, "floor": room.floor or "", "capacity": room.capacity,
            "busy": busy_until is not None,
            "until": until.astimezone(zone).strftime("%H:%M") if (until := busy_until or next_start) else None,
        })
    return {"building": building or "All buildings", "rooms": shown,
            "as_of": now.strftime("%H:%M") + " UTC"}


# --- what the door shows --------------------------------------------------------------------------


@dataclass(frozen=True)
class Meeting:
    reservation_id: int
    title: str  # "Busy" for a private meeting: the door has no viewer (booking.may_see_details)
    start: str  # HH:MM in the room's zone
    end: str
    can_end: bool = False  # under way: "End early" is offered (a booking made in Google: the room declines the rest)


@dataclass(frozen=True)
class Board:
    room: str
    busy: bool
    current: Meeting | None
    free_until: str | None  # HH:MM of the next meeting today; None: free for the rest of the day
    next: list[Meeting] = field(default_factory=list)
    check_in: Meeting | None = None  # a meeting whose check-in is open now
    book_minutes: list[int] = field(default_factory=list)  # the walk-up lengths that fit now

    def as_dict(self) -> dict:
        return asdict(self)


def _meeting(reservation: Reservation, zone, *, now: datetime | None = None) -> Meeting:
    return Meeting(
        reservation_id=reservation.id,
        title=booking.title_for(reservation, None),
        start=f"{reservation.start_at.astimezone(zone):%H:%M}",
        end=f"{reservation.end_at.astimezone(zone):%H:%M}",
        can_end=now is not None,
    )


def board(session: Session, config: Config, room: Room, now: datetime | None = None) -> Board:
    now = now or datetime.now(UTC)
    zone = room.zone
    local = now.astimezone(zone)
    end_of_day = datetime.combine(local.date() + timedelta(days=1), time(0), zone).astimezone(UTC)
    today = list(session.scalars(
        sa.select(Reservation)
        .where(Reservation.room_id == room.id, Reservation.status.in_(LIVE_STATUSES),
               Reservation.end_at > now, Reservation.start_at < end_of_day)
        .order_by(Reservation.start_at, Reservation.id)
    ))
    current = next((r for r in today if r.start_at <= now), None)
    upcoming = [r for r in today if r.start_at > now]
    free_from = current.end_at if current else now
    following = next((r for r in upcoming if r.start_at >= free_from), None)
    check_in = next((r for r in today if checkin.can_check_in(r, config, now)), None)
    book_minutes = []
    if current is None:
        start = now.replace(second=0, microsecond=0)
        limit = following.start_at if following else end_of_day
        policy = booking.Policy.for_room(room, config)
        for minutes in WALK_UP_MINUTES:
            errors: dict[str, list[str]] = {}
            end = start + timedelta(minutes=minutes)
            check_times(room, policy, start, end, start, errors, check_notice=False)
            if end <= limit and not errors:
                book_minutes.append(minutes)
    return Board(
        room=room.name,
        busy=current is not None,
        current=_meeting(current, zone, now=now) if current else None,
        free_until=f"{upcoming[0].start_at.astimezone(zone):%H:%M}" if current is None and upcoming else None,
        next=[_meeting(r, zone) for r in upcoming[:NEXT_SHOWN]],
        check_in=_meeting(check_in, zone) if check_in else None,
        book_minutes=book_minutes,
    )


def book_now(session: Session, config: Config, room: Room, minutes: int, now: datetime | None = None) -> Reservation:
    """A walk-up booking from the door, starting this minute and checked in; the room itself is its organiser."""
    if minutes not in WALK_UP_MINUTES:
        raise booking.InvalidBooking({"minutes": [f"Book {', '.join(map(str, WALK_UP_MINUTES))} minutes."]})
    start = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    result = booking.book(session, config, booking.BookingRequest(
        room_id=room.id, organiser_email=room.calendar_id, title=WALK_UP_TITLE, start=start,
        end=start + timedelta(minutes=minutes), source=ReservationSource.DISPLAY), now=start)
    # Booked by whoever stands at the door: they are there, so it is checked in at once.
    return checkin.check_in(session, config, result.reservations[0].id, checkin.display_actor(room.id), now=start)

"""Booking rules: who may reserve which room when, recurring series, edits and cancellations.

Plain domain code, called by the booking pages and the JSON API alike, testable without
HTTP. Each command (book, edit, cancel, retry) runs in its own unit of work
(roombridge/unit_of_work.py), or joins the caller's, and announces `ReservationChanged` for
each reservation whose Google event must change; the write job is queued only after the
commit, so it never sees a reservation that might still roll back. If queueing fails (Redis
down), the reservation stays committed as pending and the periodic `requeue_stale_pending`
picks it up.

The no-overlap rule is checked twice: first with a SELECT, for messages that name the
clashing reservation, then by the database itself (exclusion constraint on PostgreSQL,
trigger on SQLite), which has the last word when two requests race for one slot.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from roombridge.config import Config
from roombridge.models import (
    LIVE_STATUSES,
    Reservation,
    ReservationSource,
    ReservationStatus,
    Room,
    audit,
)
from roombridge.unit_of_work import InvitationDue, ReservationChanged, announce, run_retrying, unit_of_work

log = logging.getLogger(__name__)

MAX_TITLE_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 5000
MAX_ATTENDEES = 200
FREQUENCIES = ("daily", "weekly")


# --- what callers hand in and get back ------------------------------------------------------


@dataclass
class Recurrence:
    frequency: str  # "daily" | "weekly"
    weekdays: list[int] = field(default_factory=list)  # 0 = Monday; weekly only; empty: the start's weekday
    count: int | None = None
    until: date | None = None  # inclusive, in the room's zone


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


@dataclass(frozen=True)
class Clash:
    start: datetime
    end: datetime
    reservation_id: int
    title: str


@dataclass(frozen=True)
class Busy:
    start: datetime
    end: datetime
    reservation_id: int
    title: str
    source: ReservationSource
    organiser_email: str


class BookingError(Exception):
    """A booking that cannot be made as asked; the subclass says why."""


class InvalidBooking(BookingError):
    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


class Conflict(BookingError):
    def __init__(self, clashes: list[Clash]):
        self.clashes = clashes
        super().__init__(
            "clashes with "
            + ", ".join(f"#{c.reservation_id} {c.title!r} at {c.start:%Y-%m-%d %H:%M}Z" for c in clashes)
        )


class NotAllowed(BookingError):
    """The actor may see the reservation but not change it."""


class NotFound(BookingError):
    """No such reservation or room, or none the actor may see."""


# --- small helpers -----------------------------------------------------------------------------


def is_admin(config: Config, email: str) -> bool:
    return email.strip().lower() in config.ADMIN_EMAILS


def normalise_email(address: str) -> str:
    """A syntactically valid address, lower-cased so duplicates are found; ValueError if not."""
    try:
        checked = validate_email(address.strip(), check_deliverability=False)
    except (EmailNotValidError, AttributeError) as exc:
        raise ValueError(f"{address!r} is not a valid e-mail address") from exc
    return checked.normalized.lower()


def parse_hours(value: str) -> tuple[time, time | None]:
    """"HH:MM-HH:MM" -> (opens, closes); closes None means midnight at the end of the day (24:00)."""
    opens_text, _, closes_text = value.partition("-")
    opens = time.fromisoformat(opens_text.strip())
    closes_text = closes_text.strip()
    closes = None if closes_text in ("24:00", "00:00") else time.fromisoformat(closes_text)
    return opens, closes


@dataclass(frozen=True)
class Policy:
    bookable_hours: str
    max_duration: timedelta
    max_days_ahead: int
    min_notice: timedelta

    @classmethod
    def for_room(cls, room: Room, config: Config) -> Policy:
        def pick(own, default):
            return default if own is None else own

        return cls(
            bookable_hours=room.bookable_hours or config.BOOKABLE_HOURS,
            max_duration=timedelta(minutes=pick(room.max_duration_minutes, config.MAX_DURATION_MINUTES)),
            max_days_ahead=pick(room.max_days_ahead, config.MAX_DAYS_AHEAD),
            min_notice=timedelta(minutes=pick(room.min_notice_minutes, config.MIN_NOTICE_MINUTES)),
        )


def _add(errors: dict[str, list[str]], name: str, message: str) -> None:
    messages = errors.setdefault(name, [])
    if message not in messages:
        messages.append(message)


def _aware(name: str, value: datetime, errors: dict[str, list[str]]) -> datetime | None:
    if not isinstance(value, datetime):
        _add(errors, name, "Not a date and time.")
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        _add(errors, name, "Give a time zone or offset (e.g. 2030-01-07T10:00:00Z).")
        return None
    return value.astimezone(UTC)


def _check_times(
    room: Room,
    policy: Policy,
    start: datetime,
    end: datetime,
    now: datetime,
    errors: dict[str, list[str]],
    *,
    field_name: str = "start",
    check_notice: bool = True,
) -> None:
    """The time rules for one occurrence, in the room's zone; messages go under `field_name`."""
    zone = room.zone
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    when = f"{local_start:%Y-%m-%d %H:%M}"
    prefix = "" if field_name in ("start", "end") else f"The occurrence on {when}: "
    if end <= start:
        _add(errors, "end" if field_name == "start" else field_name, prefix + "The end must be after the start.")
        return
    if end - start > policy.max_duration:
        minutes = int(policy.max_duration.total_seconds() // 60)
        _add(errors, "end" if field_name == "start" else field_name,
             prefix + f"A booking of {room.name} may last at most {_duration_text(minutes)}.")
    if check_notice:
        if start < now + policy.min_notice:
            if policy.min_notice:
                minutes = int(policy.min_notice.total_seconds() // 60)
                _add(errors, field_name,
                     prefix + f"{room.name} must be booked at least {_duration_text(minutes)} ahead.")
            else:
                _add(errors, field_name, prefix + "The start is in the past.")
        if start > now + timedelta(days=policy.max_days_ahead):
            _add(errors, field_name, prefix + f"{room.name} can be booked at most {policy.max_days_ahead} days ahead.")
    opens, closes = parse_hours(policy.bookable_hours)
    last_moment = local_end - timedelta(microseconds=1)
    closes_at = (
        datetime.combine(local_start.date() + timedelta(days=1), time(0), zone)
        if closes is None
        else datetime.combine(local_start.date(), closes, zone)
    )
    within = (
        last_moment.date() == local_start.date()
        and local_start.timetz().replace(tzinfo=None) >= opens
        and local_end.replace(tzinfo=None) <= closes_at.replace(tzinfo=None)
    )
    if not within:
        _add(errors, field_name,
             prefix + f"{room.name} can be booked between {policy.bookable_hours} ({room.time_zone} time), "
             "within one day.")


def _duration_text(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} h" if hours else f"{rest} min"


def clean_attendees(addresses: Iterable[str], errors: dict[str, list[str]]) -> list[str]:
    """Valid, lower-cased, de-duplicated addresses in the order given."""
    cleaned: list[str] = []
    if isinstance(addresses, str) or not isinstance(addresses, Iterable):
        _add(errors, "attendees", "Give a list of e-mail addresses.")
        return cleaned
    for address in addresses:
        if not isinstance(address, str):
            _add(errors, "attendees", "Every attendee must be an e-mail address.")
            continue
        try:
            normalised = normalise_email(address)
        except ValueError as exc:
            _add(errors, "attendees", str(exc) + ".")
            continue
        if normalised not in cleaned:
            cleaned.append(normalised)
    if len(cleaned) > MAX_ATTENDEES:
        _add(errors, "attendees", f"At most {MAX_ATTENDEES} attendees.")
    return cleaned


def _capacity_warning(room: Room, organiser: str, attendees: Sequence[str]) -> list[str]:
    people = len({organiser, *attendees})
    if room.capacity is not None and people > room.capacity:
        return [f"{people} people are invited but {room.name} seats {room.capacity}."]
    return []


def _check_text(title: str, description: str, errors: dict[str, list[str]]) -> tuple[str, str]:
    if not isinstance(title, str) or not title.strip():
        _add(errors, "title", "Give the booking a title.")
        title = ""
    elif len(title.strip()) > MAX_TITLE_LENGTH:
        _add(errors, "title", f"At most {MAX_TITLE_LENGTH} characters.")
    if not isinstance(description, str):
        _add(errors, "description", "Not a text.")
        description = ""
    elif len(description) > MAX_DESCRIPTION_LENGTH:
        _add(errors, "description", f"At most {MAX_DESCRIPTION_LENGTH} characters.")
    return title.strip(), description


def _bookable_room(session: Session, room_id: int, errors: dict[str, list[str]]) -> Room | None:
    room = session.get(Room, room_id) if isinstance(room_id, int) and not isinstance(room_id, bool) else None
    if room is None:
        _add(errors, "room_id", "No such room.")
        return None
    if not room.in_scope:
        _add(errors, "room_id", f"{room.name} is not bookable here.")
        return None
    return room


# --- how our events describe themselves on the room calendar ----------------------------------

# In room mode the event carries no Google attendees, so its description ends with who
# booked and who is invited, after this mark. The sync engine strips it again
# (`description_from_event`), so our own footer never comes back as an edit made in Google.
EVENT_FOOTER_MARK = "\n\n--\nRoombridge: "


def event_description(reservation: Reservation, *, delegated: bool) -> str:
    """The Google event description of a reservation (room mode: with the booking footer)."""
    description = reservation.description or ""
    if delegated:
        return description  # Google lists the attendees itself
    footer = f"booked by {reservation.organiser_email}"
    others = [a for a in reservation.attendees or [] if a != reservation.organiser_email]
    if others:
        footer += "\nAttendees: " + ", ".join(others)
    return description + EVENT_FOOTER_MARK + footer


def description_from_event(text: str | None) -> str:
    """The reservation's own description inside a Google event description: our footer removed."""
    text = text or ""
    head, mark, _ = text.rpartition(EVENT_FOOTER_MARK)
    return head if mark else text


# --- recurrence ------------------------------------------------------------------------------


def expand(recurrence: Recurrence | None, start: datetime, end: datetime, zone: ZoneInfo, limit: int,
           errors: dict[str, list[str]]) -> list[tuple[datetime, datetime]]:
    """Every occurrence as (start, end) in UTC, at the same wall-clock times in `zone`.

    Keeping the wall-clock time (not the UTC offset) is what people mean by "every Monday
    at 9": across a DST change the UTC instant moves and the meeting does not.
    """
    if recurrence is None:
        return [(start, end)]
    if recurrence.frequency not in FREQUENCIES:
        _add(errors, "recurrence", "Repeat daily or weekly.")
        return []
    if (recurrence.count is None) == (recurrence.until is None):
        _add(errors, "recurrence", "Give either a number of occurrences or an end date.")
        return []
    weekdays = sorted(set(recurrence.weekdays or []))
    if any(not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= 6 for d in weekdays):
        _add(errors, "recurrence", "Weekdays are 0 (Monday) to 6 (Sunday).")
        return []
    if recurrence.count is not None and not 1 <= recurrence.count <= limit:
        _add(errors, "recurrence", f"Between 1 and {limit} occurrences.")
        return []
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    if recurrence.frequency == "weekly" and not weekdays:
        weekdays = [local_start.weekday()]
    if recurrence.until is not None and recurrence.until < local_start.date():
        _add(errors, "recurrence", "The end date is before the first occurrence.")
        return []
    day_span = local_end.date() - local_start.date()
    occurrences: list[tuple[datetime, datetime]] = []
    day = local_start.date()
    while True:
        if recurrence.count is not None and len(occurrences) >= recurrence.count:
            break
        if recurrence.until is not None and day > recurrence.until:
            break
        if recurrence.frequency == "daily" or day.weekday() in weekdays:
            if len(occurrences) >= limit:
                _add(errors, "recurrence", f"At most {limit} occurrences; choose an earlier end date.")
                return []
            occ_start = datetime.combine(day, local_start.time(), zone)
            occ_end = datetime.combine(day + day_span, local_end.time(), zone)
            occurrences.append((_normalise_wall_time(occ_start), _normalise_wall_time(occ_end)))
        day += timedelta(days=1)
    return occurrences


def _normalise_wall_time(local: datetime) -> datetime:
    # A wall time skipped by a DST jump (02:30 on a spring-forward night) does not exist;
    # converting through UTC maps it to the instant an hour later, which is what clocks show.
    return local.astimezone(UTC)


# --- conflicts -------------------------------------------------------------------------------


def _live_overlapping(room_id: int, spans: Sequence[tuple[datetime, datetime]], exclude_ids: Sequence[int] = ()):
    conditions = [sa.and_(Reservation.start_at < end, Reservation.end_at > start) for start, end in spans]
    query = sa.select(Reservation).where(
        Reservation.room_id == room_id,
        Reservation.status.in_(LIVE_STATUSES),
        sa.or_(*conditions),
    )
    if exclude_ids:
        query = query.where(Reservation.id.not_in(list(exclude_ids)))
    return query.order_by(Reservation.start_at)


def find_clashes(session: Session, room_id: int, spans: Sequence[tuple[datetime, datetime]],
                 exclude_ids: Sequence[int] = ()) -> dict[int, list[Clash]]:
    """For each span (by index), the live reservations of the room it overlaps; ONE query."""
    if not spans:
        return {}
    found = session.scalars(_live_overlapping(room_id, spans, exclude_ids)).all()
    clashes: dict[int, list[Clash]] = {}
    for index, (start, end) in enumerate(spans):
        for other in found:
            if other.start_at < end and other.end_at > start:
                clashes.setdefault(index, []).append(Clash(other.start_at, other.end_at, other.id, other.title))
    return clashes


def _is_overlap_violation(exc: IntegrityError) -> bool:
    text = str(exc.orig)
    return "reservation_overlap" in text or "ex_reservations_no_overlap" in text


class _OverlapRace(Exception):
    """The database refused an overlap a concurrent booking made; raised inside the unit, answered after it."""

    def __init__(self, room_id: int, spans: Sequence[tuple[datetime, datetime]], exclude_ids: Sequence[int] = ()):
        super().__init__(f"overlap in room {room_id}")
        self.room_id, self.spans, self.exclude_ids = room_id, list(spans), list(exclude_ids)


def _flush_refusing_overlap(session: Session, room_id: int, spans, exclude_ids: Sequence[int] = ()) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        if not _is_overlap_violation(exc):
            raise
        raise _OverlapRace(room_id, spans, exclude_ids) from exc


def _conflict_after_race(session: Session, race: _OverlapRace) -> Conflict:
    """Name what the refused overlap clashed with (read after the unit rolled back)."""
    found = find_clashes(session, race.room_id, race.spans, race.exclude_ids)
    clashes = [c for per_span in found.values() for c in per_span]
    unique = list({c.reservation_id: c for c in clashes}.values())
    return Conflict(unique)


# --- booking ---------------------------------------------------------------------------------


def book(session: Session, config: Config, request: BookingRequest, now: datetime | None = None) -> BookingResult:
    """Reserve a room (one occurrence or a series); the write to its Google calendar follows the commit."""
    try:
        return run_retrying(session, lambda: _book_once(session, config, request, now))
    except _OverlapRace as race:
        raise _conflict_after_race(session, race) from race.__cause__


def _book_once(session: Session, config: Config, request: BookingRequest, now: datetime | None) -> BookingResult:
    now = now or datetime.now(UTC)
    errors: dict[str, list[str]] = {}
    organiser = _organiser(request.organiser_email, errors)
    title, description = _check_text(request.title, request.description, errors)
    attendees = clean_attendees(request.attendees, errors)
    room = _bookable_room(session, request.room_id, errors)
    start = _aware("start", request.start, errors)
    end = _aware("end", request.end, errors)
    spans: list[tuple[datetime, datetime]] = []
    if room is not None and start is not None and end is not None:
        policy = Policy.for_room(room, config)
        if end <= start:
            _add(errors, "end", "The end must be after the start.")
        else:
            spans = expand(request.recurrence, start, end, room.zone, config.MAX_OCCURRENCES, errors)
            for index, (occ_start, occ_end) in enumerate(spans):
                _check_times(room, policy, occ_start, occ_end, now, errors,
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

    series_id = uuid.uuid4().hex if request.recurrence is not None else None
    reservations = [
        Reservation(
            room_id=room.id,
            organiser_email=organiser,
            title=title,
            description=description,
            start_at=occ_start,
            end_at=occ_end,
            attendees=attendees,
            status=ReservationStatus.PENDING,
            source=request.source,
            series_id=series_id,
        )
        for occ_start, occ_end in spans
    ]
    session.add_all(reservations)
    _flush_refusing_overlap(session, room.id, spans)
    for reservation in reservations:
        audit(session, organiser, "reservation.create", reservation, room_id=room.id,
              start=reservation.start_at.isoformat(), end=reservation.end_at.isoformat(),
              source=str(request.source), series_id=series_id)
        announce(session, ReservationChanged(reservation.id))
    warnings = _capacity_warning(room, organiser, attendees)
    if skipped:
        warnings.append(f"{len(skipped)} clashing occurrence(s) were left out.")
    return BookingResult(reservations=reservations, warnings=warnings, skipped=skipped)


def _organiser(email: str, errors: dict[str, list[str]]) -> str:
    try:
        return normalise_email(email)
    except (ValueError, TypeError):
        _add(errors, "organiser_email", "The organiser needs a valid e-mail address.")
        return ""


# --- reading ---------------------------------------------------------------------------------


def can_see(reservation: Reservation, actor_email: str, actor_is_admin: bool) -> bool:
    actor = actor_email.strip().lower()
    return actor_is_admin or reservation.organiser_email == actor or actor in (reservation.attendees or [])


def can_change(reservation: Reservation, actor_email: str, actor_is_admin: bool) -> bool:
    return actor_is_admin or reservation.organiser_email == actor_email.strip().lower()


def get(session: Session, reservation_id: int, *, actor_email: str, actor_is_admin: bool) -> Reservation:
    """The reservation if the actor organises it, attends it or is an admin; else NotFound."""
    reservation = session.get(Reservation, reservation_id)
    if reservation is None or not can_see(reservation, actor_email, actor_is_admin):
        raise NotFound(f"no reservation {reservation_id}")
    return reservation


def list_reservations(
    session: Session,
    *,
    actor_email: str,
    actor_is_admin: bool,
    room_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    include_cancelled: bool = False,
    limit: int = 500,
) -> list[Reservation]:
    """Reservations the actor may see, overlapping [start, end) when given, soonest first."""
    query = sa.select(Reservation)
    if not actor_is_admin:
        actor = actor_email.strip().lower()
        # Attendees live in a JSON list; matching the quoted address works on SQLite and
        # PostgreSQL alike, and a cheap organiser index narrows the common case.
        query = query.where(
            sa.or_(
                Reservation.organiser_email == actor,
                sa.cast(Reservation.attendees, sa.Text).contains(f'"{actor}"', autoescape=True),
            )
        )
    if room_id is not None:
        query = query.where(Reservation.room_id == room_id)
    if start is not None:
        query = query.where(Reservation.end_at > start)
    if end is not None:
        query = query.where(Reservation.start_at < end)
    if not include_cancelled:
        query = query.where(Reservation.status != ReservationStatus.CANCELLED)
    return list(session.scalars(query.order_by(Reservation.start_at, Reservation.id).limit(limit)))


def day_timeline(session: Session, rooms: list[Room], day: date) -> dict[int, list[Busy]]:
    """Each room's live reservations on `day` (the room's own calendar day); ONE query."""
    if not rooms:
        return {}
    windows = {}
    for room in rooms:
        zone = room.zone
        windows[room.id] = (
            datetime.combine(day, time(0), zone).astimezone(UTC),
            datetime.combine(day + timedelta(days=1), time(0), zone).astimezone(UTC),
        )
    earliest = min(w[0] for w in windows.values())
    latest = max(w[1] for w in windows.values())
    found = session.scalars(
        sa.select(Reservation)
        .where(
            Reservation.room_id.in_(list(windows)),
            Reservation.status.in_(LIVE_STATUSES),
            Reservation.start_at < latest,
            Reservation.end_at > earliest,
        )
        .order_by(Reservation.start_at)
    ).all()
    timeline: dict[int, list[Busy]] = {room.id: [] for room in rooms}
    for reservation in found:
        window_start, window_end = windows[reservation.room_id]
        if reservation.start_at < window_end and reservation.end_at > window_start:
            timeline[reservation.room_id].append(
                Busy(reservation.start_at, reservation.end_at, reservation.id, reservation.title,
                     reservation.source, reservation.organiser_email)
            )
    return timeline


def find_free_rooms(
    session: Session,
    start: datetime,
    end: datetime,
    *,
    people: int | None = None,
    features: Iterable[str] = (),
    building: str | None = None,
    floor: str | None = None,
) -> list[Room]:
    """In-scope rooms free for all of [start, end) that fit the filters; one query."""
    busy = (
        sa.select(Reservation.id)
        .where(
            Reservation.room_id == Room.id,
            Reservation.status.in_(LIVE_STATUSES),
            Reservation.start_at < end,
            Reservation.end_at > start,
        )
        .exists()
    )
    query = sa.select(Room).where(Room.in_scope.is_(True), ~busy)
    if people:
        query = query.where(Room.capacity >= people)
    if building:
        query = query.where(Room.building == building)
    if floor:
        query = query.where(Room.floor == floor)
    wanted = {f.strip().lower() for f in features if f and f.strip()}
    rooms = session.scalars(query.order_by(Room.capacity, Room.name)).all()
    # Features are a short JSON list per room; filtering here keeps one portable query.
    return [room for room in rooms if wanted <= {f.lower() for f in (room.features or [])}]


# --- changing --------------------------------------------------------------------------------

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
    except _OverlapRace as race:
        raise _conflict_after_race(session, race) from race.__cause__
    if freed:
        # The old slot may be free now for a Google booking kept as a conflict.
        _settle_after(session, freed, actor_email.strip().lower())
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
    new_title, new_description = _check_text(
        reservation.title if title is _UNSET else title,
        reservation.description if description is _UNSET else description,
        errors,
    )
    new_attendees = (
        list(reservation.attendees or []) if attendees is _UNSET else clean_attendees(attendees, errors)
    )
    room = reservation.room if room_id is _UNSET else _bookable_room(session, room_id, errors)
    new_start = reservation.start_at if start is _UNSET else _aware("start", start, errors)
    new_end = reservation.end_at if end is _UNSET else _aware("end", end, errors)
    if room is not None and not room.in_scope:
        _add(errors, "room_id", f"{room.name} is not bookable here.")
    if room is not None and new_start is not None and new_end is not None:
        when_changed = (new_start, new_end, room.id) != (reservation.start_at, reservation.end_at, reservation.room_id)
        # A meeting under way may still get a new title or attendees; notice rules apply to moves.
        _check_times(room, Policy.for_room(room, config), new_start, new_end, now, errors,
                     check_notice=when_changed)
    if errors:
        raise InvalidBooking(errors)
    assert room is not None and new_start is not None and new_end is not None

    span = [(new_start, new_end)]
    clashes = find_clashes(session, room.id, span, exclude_ids=[reservation.id])
    if clashes:
        raise Conflict(clashes[0])

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
        audit(session, actor_email.strip().lower(), "reservation.edit", reservation, changes=changes)
    _flush_refusing_overlap(session, room.id, span, [reservation_id])
    if changes:
        announce(session, ReservationChanged(reservation.id))
        if removed and reservation.google_event_id:
            # Attendees dropped by the edit are told they are no longer invited (room mode mail).
            announce(session, InvitationDue(reservation.id, "CANCEL", tuple(removed)))
        if {"start_at", "end_at", "room_id"} & changes.keys():
            freed.update({reservation.room_id, *changes.get("room_id", [])})
    return BookingResult(
        reservations=[reservation],
        warnings=_capacity_warning(room, reservation.organiser_email, new_attendees),
    )


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
    _settle_after(session, [reservation.room_id], actor)
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


# --- conflicts: Google bookings kept over a live reservation ----------------------------------------


def _settle_after(session: Session, room_ids: Iterable[int], actor: str) -> None:
    """Settle conflicts in a unit of work after a committed change; the change stands even if this fails."""
    try:
        run_retrying(session, lambda: settle_conflicts(session, room_ids, actor=actor))
    except Exception:
        # The next change in the room (here, or a sync) tries again; admins see the conflict meanwhile.
        log.warning("could not settle conflicts in room(s) %s", room_ids, exc_info=True)


def settle_conflicts(session: Session, room_ids: Iterable[int], *, actor: str = "system",
                     now: datetime | None = None) -> list[int]:
    """Let Google bookings kept as conflicts take their slot once nothing live holds it any more.

    Called after a reservation is cancelled or moved (here, or in Google through the sync).
    Each promotion runs in a savepoint, so the database's no-overlap rule decides: a booking
    that still overlaps a live reservation stays a conflict. Returns the promoted ids; run it
    in a write unit of work.
    """
    room_ids = sorted(set(room_ids))
    if not room_ids:
        return []
    now = now or datetime.now(UTC)
    waiting = session.scalars(
        sa.select(Reservation)
        .where(Reservation.room_id.in_(room_ids), Reservation.status == ReservationStatus.CONFLICT,
               Reservation.end_at > now)
        .order_by(Reservation.start_at, Reservation.id)
    ).all()
    promoted = []
    for reservation in waiting:
        try:
            with session.begin_nested():
                reservation.status = ReservationStatus.CONFIRMED
                reservation.conflict_with_id = None
                reservation.status_reason = None
        except IntegrityError:
            continue  # still overlaps something live: stays a conflict for admins
        audit(session, actor, "reservation.conflict_settled", reservation)
        promoted.append(reservation.id)
    if promoted:
        log.info("conflicts settled in room(s) %s: %s", room_ids, promoted)
    return promoted

"""Check-in, the release of no-shows, ending a meeting early and extending it.

Plain domain code, called by the pages, the API, the room display and the scheduler's job
alike. Every command runs in its own unit of work (roombridge/unit_of_work.py), or joins
the caller's, and announces `ReservationChanged` for a change Google must see: the write
job then deletes our event of a released reservation, declines a booking made in Google
on the room's copy (roombridge/publish.py), or patches the new end.

Rules, decided on purpose:

- The check-in window opens `opens` minutes before the start and closes `grace` minutes
  after it (the room's settings, else CHECKIN_*). A check-in outside it is refused. The
  organiser, an attendee, an admin, the room's own display, or whoever holds the signed
  link of the invitation mail may check in; the reservation records who and when.
- At the deadline a reservation that needs a check-in and has none is released (status
  `released`, reason `no_show`) or only flagged (`missed_checkin_at`), as the room says.
  Both the release and the check-in are one conditional UPDATE on the row ("still live,
  not checked in, not past its deadline yet"), so the database orders them: whichever
  reaches the row first wins and the other finds nothing to do. Two schedulers, two
  workers, or a worker killed after its commit cannot release a reservation twice; one
  killed before its commit released nothing, and the next run does it.
- A series released on CHECKIN_SERIES_END_AFTER consecutive occurrences is ended. The
  organiser is warned by mail one no-show before, and told when it happens. A series is
  known by `series_id` (ours: one id for all its occurrences, however publish writes them
  to Google; Google's: the recurring event's id), so the rule is the same for both. Ours:
  the later occurrences are cancelled, and publish removes them from Google. Made in
  Google: the series is its organiser's, so the room declines each later instance on its
  own copy (status released, reason `series_ended`; never a no-show in Insights), and an
  instance the sync mirrors later (beyond its window) is declined as it arrives
  (`follow_ended_series`). Declining the series as a whole would decline the past
  instances too, and the mirror would then cancel meetings that took place.
- Ending early moves the end to now (the booked end kept in `original_end_at`); extending
  adds 15 or 30 minutes when the room is free. For a booking made here we own the event and
  Google gets the new end.
- A booking made in Google belongs to its organiser. With least privilege (the room's
  calendar shared, `calendar.events`, no delegation) the room holds an attendee's copy, on
  which Google lets the room change only its own answer (responseStatus, comment): a new
  end is 403 forbiddenForNonOrganizer, and taking over the organiser's event would need
  their calendar. So "end early" of a Google booking is the room declining the rest of the
  meeting on its copy, with a comment saying when it ended: Google sends the decline to the
  organiser and frees the room in Google; here the end moves to now as for ours, and the
  sync keeps it so (roombridge/mirror.py). "Extend" is refused for a Google booking: no
  answer of the room can lengthen someone else's meeting; its organiser extends it in
  Google (and the room accepts it if free), or books the next slot here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer
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
from roombridge.booking.rules import InvalidBooking, NotAllowed, NotFound, Policy, check_times
from roombridge.config import Config
from roombridge.models import (
    CheckinDeadlineAction,
    ReleaseReason,
    Reservation,
    ReservationSource,
    ReservationStatus,
    Room,
    audit,
)
from roombridge.unit_of_work import ReservationChanged, announce, run_retrying, unit_of_work

log = logging.getLogger(__name__)

DISPLAY = "display"  # `checked_in_by` and the audit actor of a room display
MAIL_LINK = "mail link"  # `checked_in_by` of a check-in through the invitation's signed link
LINK_SALT = "roombridge.checkin-link"
EXTENSIONS = (15, 30)  # minutes a meeting may be extended by
# Reservations that may still check in: a pending one (its Google write under way) holds the room too.
CHECKABLE = (ReservationStatus.PENDING, ReservationStatus.CONFIRMED, ReservationStatus.FAILED)
# How far back the deadline scan looks: a scheduler down longer than this leaves older no-shows alone.
SCAN_BACK = timedelta(hours=24)


@dataclass(frozen=True)
class CheckinPolicy:
    required: bool
    opens: timedelta  # before the start
    grace: timedelta  # after the start: the deadline
    action: CheckinDeadlineAction

    @classmethod
    def for_room(cls, room: Room, config: Config) -> CheckinPolicy:
        def pick(own, default):
            return default if own is None else own

        return cls(
            required=bool(pick(room.checkin_required, config.CHECKIN_REQUIRED)),
            opens=timedelta(minutes=pick(room.checkin_opens_minutes, config.CHECKIN_OPENS_MINUTES)),
            grace=timedelta(minutes=pick(room.checkin_grace_minutes, config.CHECKIN_GRACE_MINUTES)),
            action=CheckinDeadlineAction(pick(room.checkin_deadline_action, config.CHECKIN_DEADLINE_ACTION)),
        )

    def window(self, reservation: Reservation) -> tuple[datetime, datetime]:
        """When check-in opens and its deadline (never after the end, for short meetings)."""
        return reservation.start_at - self.opens, min(reservation.start_at + self.grace, reservation.end_at)


MAX_WINDOW_MINUTES = 240


def set_room_policy(session: Session, room: Room, *, required: bool | None, opens_minutes: int | None,
                    grace_minutes: int | None, action: CheckinDeadlineAction | None, actor: str = "system") -> Room:
    """Set a room's own check-in policy; None keeps the global default (CHECKIN_*). InvalidBooking if out of range."""
    errors: dict[str, list[str]] = {}
    for name, value in (("checkin_opens_minutes", opens_minutes), ("checkin_grace_minutes", grace_minutes)):
        if value is not None and not 0 <= value <= MAX_WINDOW_MINUTES:
            errors.setdefault(name, []).append(f"Between 0 and {MAX_WINDOW_MINUTES} minutes, or empty for the default.")
    if errors:
        raise InvalidBooking(errors)
    values = {"checkin_required": required, "checkin_opens_minutes": opens_minutes,
              "checkin_grace_minutes": grace_minutes, "checkin_deadline_action": action}
    with unit_of_work(session):
        changed = {k: [_plain(getattr(room, k)), _plain(v)] for k, v in values.items() if getattr(room, k) != v}
        for key, value in values.items():
            setattr(room, key, value)
        if changed:
            audit(session, actor, "room.checkin_policy", room, changes=changed)
    return room


def _plain(value):
    return value.value if isinstance(value, CheckinDeadlineAction) else value


@dataclass(frozen=True)
class CheckinNoticeDue:
    """Mail the organiser about a no-show (`released`, `flagged`) or its series (`series_warning`, `series_ended`)."""

    reservation_id: int
    kind: str


@dataclass(frozen=True)
class Actor:
    """Who acts: a person (by e-mail, perhaps an admin), the display of one room, or a signed mail link."""

    email: str | None = None
    is_admin: bool = False
    display_room_id: int | None = None
    mail_link: bool = False  # holds the signed check-in link of the reservation's invitation

    @property
    def name(self) -> str:
        if self.email:
            return self.email.strip().lower()
        return MAIL_LINK if self.mail_link else DISPLAY


def display_actor(room_id: int) -> Actor:
    return Actor(display_room_id=room_id)


def person(email: str, is_admin: bool = False) -> Actor:
    return Actor(email=email, is_admin=is_admin)


def _visible(session: Session, reservation_id: int, actor: Actor) -> Reservation:
    reservation = session.get(Reservation, reservation_id, populate_existing=True)
    if reservation is None:
        raise NotFound(f"no reservation {reservation_id}")
    if actor.mail_link:
        pass  # the link was signed for this reservation
    elif actor.display_room_id is not None:
        if reservation.room_id != actor.display_room_id:
            raise NotFound(f"no reservation {reservation_id}")
    elif not can_see(reservation, actor.email or "", actor.is_admin):
        raise NotFound(f"no reservation {reservation_id}")
    return reservation


def _bump(reservation: Reservation) -> dict:
    return {"version": reservation.version + 1, "updated_at": datetime.now(UTC)}


# --- check-in -----------------------------------------------------------------------------------


def can_check_in(reservation: Reservation, config: Config, now: datetime) -> bool:
    """Whether to offer a check-in now: the room needs one, its window is open, nobody has checked in yet."""
    if reservation.status not in CHECKABLE or reservation.checked_in_at or reservation.missed_checkin_at:
        return False
    policy = CheckinPolicy.for_room(reservation.room, config)
    opens, deadline = policy.window(reservation)
    return policy.required and opens <= now <= deadline


def check_in(session: Session, config: Config, reservation_id: int, actor: Actor,
             now: datetime | None = None) -> Reservation:
    """Record that the meeting has begun; checking in twice is harmless. InvalidBooking outside the window."""
    now = now or datetime.now(UTC)
    with unit_of_work(session):
        reservation = _visible(session, reservation_id, actor)
        if reservation.checked_in_at is not None:
            return reservation
        if reservation.status not in CHECKABLE:
            raise InvalidBooking({"check_in": [f"A {reservation.status} reservation cannot be checked in to."]})
        opens, deadline = CheckinPolicy.for_room(reservation.room, config).window(reservation)
        zone = reservation.room.zone
        if now < opens:
            raise InvalidBooking({"check_in": [f"Check-in opens at {opens.astimezone(zone):%H:%M}."]})
        if now > deadline or reservation.missed_checkin_at is not None:
            raise InvalidBooking({"check_in": [f"Check-in closed at {deadline.astimezone(zone):%H:%M}."]})
        # The release job's UPDATE has the mirror condition: whichever reaches the row first wins.
        taken = session.execute(
            sa.update(Reservation)
            .where(Reservation.id == reservation.id, Reservation.status.in_(CHECKABLE),
                   Reservation.checked_in_at.is_(None), Reservation.missed_checkin_at.is_(None))
            .values(checked_in_at=now, checked_in_by=actor.name, **_bump(reservation))
            .execution_options(synchronize_session=False)
        ).rowcount
        session.refresh(reservation)
        if not taken:
            raise InvalidBooking({"check_in": [f"Too late: the reservation is {reservation.status} now."]})
        audit(session, actor.name, "reservation.check_in", reservation, at=now.isoformat())
    return reservation


def link_token(config: Config, reservation: Reservation) -> str | None:
    """The signed one-click check-in token of a reservation, valid until its deadline (None without SECRET_KEY).

    Without a configured SECRET_KEY each process signs with a random key of its own, so a link
    made by the worker would not open on the web: no link then.
    """
    if not config.SECRET_KEY:
        return None
    deadline = CheckinPolicy.for_room(reservation.room, config).window(reservation)[1]
    return URLSafeSerializer(config.SECRET_KEY, salt=LINK_SALT).dumps({"r": reservation.id,
                                                                       "x": int(deadline.timestamp())})


def link_url(config: Config, reservation: Reservation) -> str | None:
    token = link_token(config, reservation)
    if token is None:
        return None
    base = (config.PUBLIC_BASE_URL or config.WEBHOOK_BASE_URL).rstrip("/")
    return f"{base}/check-in/{token}"


def reservation_of_link(config: Config, token: str, now: datetime | None = None) -> int | None:
    """The reservation a check-in token was signed for, if the signature holds and its deadline has not passed."""
    if not config.SECRET_KEY or len(token) > 500:
        return None
    try:
        payload = URLSafeSerializer(config.SECRET_KEY, salt=LINK_SALT).loads(token)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("r"), int) or not isinstance(payload.get("x"), int):
        return None
    now = now or datetime.now(UTC)
    return payload["r"] if now.timestamp() <= payload["x"] else None


# --- the deadline -------------------------------------------------------------------------------


def due_for_deadline(session: Session, config: Config, now: datetime) -> list[int]:
    """Reservations past their check-in deadline with no check-in, in rooms that require one."""
    rows = session.execute(
        sa.select(Reservation, Room)
        .join(Room, Room.id == Reservation.room_id)
        .where(Reservation.status.in_(CHECKABLE), Reservation.checked_in_at.is_(None),
               Reservation.missed_checkin_at.is_(None), Reservation.all_day.is_(False),
               Reservation.start_at <= now, Reservation.start_at > now - SCAN_BACK)
        .order_by(Reservation.start_at, Reservation.id)
    ).all()
    due = []
    for reservation, room in rows:
        policy = CheckinPolicy.for_room(room, config)
        if policy.required and policy.window(reservation)[1] <= now:
            due.append(reservation.id)
    return due


def apply_deadline(session: Session, config: Config, reservation_id: int, now: datetime | None = None) -> str:
    """Release (or flag) one no-show, once; returns what was done ("nothing" if it checked in first)."""
    now = now or datetime.now(UTC)
    room_id: int | None = None
    with unit_of_work(session):
        reservation = session.get(Reservation, reservation_id, populate_existing=True)
        if reservation is None:
            return "gone"
        policy = CheckinPolicy.for_room(reservation.room, config)
        if not policy.required or policy.window(reservation)[1] > now:
            return "not due"
        release = policy.action is CheckinDeadlineAction.RELEASE
        values: dict = {"missed_checkin_at": now, **_bump(reservation)}
        if release:
            local = policy.window(reservation)[1].astimezone(reservation.room.zone)
            values |= {"status": ReservationStatus.RELEASED, "released_at": now,
                       "release_reason": ReleaseReason.NO_SHOW, "conflict_with_id": None,
                       "status_reason": f"released: nobody checked in by {local:%H:%M}"}
        done = session.execute(
            sa.update(Reservation)
            .where(Reservation.id == reservation_id, Reservation.status.in_(CHECKABLE),
                   Reservation.checked_in_at.is_(None), Reservation.missed_checkin_at.is_(None))
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not done:
            return "nothing"  # checked in, cancelled, or released by another run first
        session.refresh(reservation)
        audit(session, "system", "reservation.released" if release else "reservation.no_show", reservation,
              reason=ReleaseReason.NO_SHOW.value)
        if release:
            announce(session, ReservationChanged(reservation.id))
            room_id = reservation.room_id
        announce(session, CheckinNoticeDue(reservation.id, "released" if release else "flagged"))
        if release:
            _series_after_release(session, config, reservation, now)
    if room_id is not None:
        settle_after(session, [room_id], "system")  # a Google booking kept as a conflict may take the slot
    return "released" if release else "flagged"


def _series_after_release(session: Session, config: Config, reservation: Reservation, now: datetime) -> None:
    """End a series released on N consecutive occurrences (ours or Google's); warn its organiser one before."""
    limit = config.CHECKIN_SERIES_END_AFTER
    if not limit or not reservation.series_id:
        return
    recent = session.scalars(
        sa.select(Reservation.status)
        .where(Reservation.series_id == reservation.series_id, Reservation.room_id == reservation.room_id,
               Reservation.start_at <= reservation.start_at, Reservation.status != ReservationStatus.CANCELLED)
        .order_by(Reservation.start_at.desc()).limit(limit)
    ).all()
    in_a_row = 0
    for status in recent:
        if status != ReservationStatus.RELEASED:
            break
        in_a_row += 1
    if in_a_row == limit:
        later = session.scalars(
            sa.select(Reservation)
            .where(Reservation.series_id == reservation.series_id, Reservation.room_id == reservation.room_id,
                   Reservation.start_at > now, Reservation.status.in_(CHECKABLE))
        ).all()
        why = f"series ended: nobody checked in {limit} times in a row"
        for occurrence in later:
            _end_with_series(session, occurrence, why, now, after=reservation.id)
        announce(session, CheckinNoticeDue(reservation.id, "series_ended"))
    elif in_a_row == limit - 1:
        announce(session, CheckinNoticeDue(reservation.id, "series_warning"))


def _end_with_series(session: Session, occurrence: Reservation, why: str, now: datetime, **details) -> None:
    if occurrence.source == ReservationSource.GOOGLE:
        # Not ours to cancel: released, so publish declines it on the room's copy and no sync revives it.
        occurrence.status = ReservationStatus.RELEASED
        occurrence.release_reason = ReleaseReason.SERIES_ENDED
        occurrence.released_at = now
    else:
        occurrence.status = ReservationStatus.CANCELLED
    occurrence.status_reason = why
    audit(session, "system", "reservation.series_ended", occurrence, **details)
    announce(session, ReservationChanged(occurrence.id))


def follow_ended_series(session: Session, reservation: Reservation, now: datetime | None = None) -> bool:
    """A Google instance just mirrored, of a series this room ended before it started: declined like its siblings.

    For the sync engine, inside its unit of work; True if the instance was ended.
    """
    if (reservation.source != ReservationSource.GOOGLE or not reservation.series_id
            or reservation.status not in CHECKABLE):
        return False
    ended = session.execute(
        sa.select(Reservation.id, Reservation.status_reason)
        .where(Reservation.series_id == reservation.series_id, Reservation.room_id == reservation.room_id,
               Reservation.release_reason == ReleaseReason.SERIES_ENDED,
               Reservation.released_at < reservation.start_at)
        .order_by(Reservation.released_at).limit(1)
    ).first()
    if ended is None:
        return False
    _end_with_series(session, reservation, ended.status_reason or "series ended", now or datetime.now(UTC),
                     like=ended.id)
    return True


def release_no_shows(session: Session, config: Config, now: datetime | None = None) -> dict[str, int]:
    """Apply the deadline to every reservation due; each in its own unit of work. Returns counts by outcome."""
    now = now or datetime.now(UTC)
    with unit_of_work(session, write=False):
        due = due_for_deadline(session, config, now)
    outcomes: dict[str, int] = {}
    for reservation_id in due:
        try:
            outcome = apply_deadline(session, config, reservation_id, now)
        except Exception:
            log.exception("could not apply the check-in deadline to reservation %s", reservation_id)
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


# --- end early, extend --------------------------------------------------------------------------


def _own_live(session: Session, reservation_id: int, actor: Actor, what: str, *,
              google_too: bool = False) -> Reservation:
    reservation = _visible(session, reservation_id, actor)
    if actor.display_room_id is None and not can_change(reservation, actor.email or "", actor.is_admin):
        raise NotAllowed(f"Only the organiser or an admin may {what} this meeting.")
    if reservation.source == ReservationSource.GOOGLE and not google_too:
        raise NotAllowed(f"This booking was made in Google Calendar: only its organiser can {what} it, there.")
    if not reservation.is_live:
        raise InvalidBooking({"status": [f"A {reservation.status} reservation cannot be changed."]})
    return reservation


def end_early(session: Session, config: Config, reservation_id: int, actor: Actor,
              now: datetime | None = None) -> Reservation:
    """End a meeting under way now: the rest of its slot is free at once; Google follows (for a booking
    made in Google, by the room declining the rest of it: see the module's docstring)."""
    now = now or datetime.now(UTC)
    with unit_of_work(session):
        reservation = _own_live(session, reservation_id, actor, "end", google_too=True)
        if not reservation.start_at <= now < reservation.end_at:
            raise InvalidBooking({"end": ["Only a meeting under way can be ended early."]})
        # On the minute, as walk-up bookings start: one made at once right after fits without a clash.
        new_end = max(now.replace(second=0, microsecond=0), reservation.start_at + timedelta(minutes=1))
        if new_end >= reservation.end_at:
            return reservation
        audit(session, actor.name, "reservation.end_early", reservation,
              end=[reservation.end_at.isoformat(), new_end.isoformat()])
        reservation.original_end_at = reservation.original_end_at or reservation.end_at
        reservation.end_at = new_end
        reservation.ended_early_at = now
        if reservation.source != ReservationSource.GOOGLE:
            reservation.status = ReservationStatus.PENDING  # our event gets the new end
            reservation.status_reason = None
        announce(session, ReservationChanged(reservation.id))  # ours: patched; Google's: declined by the room
    settle_after(session, [reservation.room_id], actor.name)
    return reservation


def extend(session: Session, config: Config, reservation_id: int, minutes: int, actor: Actor,
           now: datetime | None = None) -> Reservation:
    """Add 15 or 30 minutes to a meeting not yet over, if the room is free then. Conflict if not."""
    if minutes not in EXTENSIONS:
        raise InvalidBooking({"minutes": [f"Extend by {' or '.join(map(str, EXTENSIONS))} minutes."]})
    now = now or datetime.now(UTC)

    def once() -> Reservation:
        reservation = _own_live(session, reservation_id, actor, "extend")
        if reservation.end_at <= now:
            raise InvalidBooking({"end": ["This meeting is over."]})
        room = reservation.room
        new_end = reservation.end_at + timedelta(minutes=minutes)
        errors: dict[str, list[str]] = {}
        check_times(room, Policy.for_room(room, config), reservation.start_at, new_end, now, errors,
                    check_notice=False)
        if errors:
            raise InvalidBooking(errors)
        span = [(reservation.end_at, new_end)]
        clashes = find_clashes(session, room.id, span, exclude_ids=[reservation.id])
        if clashes:
            raise Conflict(clashes[0])
        audit(session, actor.name, "reservation.extend", reservation,
              end=[reservation.end_at.isoformat(), new_end.isoformat()])
        reservation.end_at = new_end
        reservation.status = ReservationStatus.PENDING
        reservation.status_reason = None
        flush_refusing_overlap(session, room.id, span, [reservation.id])
        announce(session, ReservationChanged(reservation.id))
        return reservation

    try:
        return run_retrying(session, once)
    except OverlapRace as race:
        raise conflict_after_race(session, race) from race.__cause__

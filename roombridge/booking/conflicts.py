"""Clashes: the overlap queries, the database's last word on a race, and conflicts settling.

The no-overlap rule is checked twice: first with a SELECT, for messages that name the
clashing reservation, then by the database itself (exclusion constraint on PostgreSQL,
trigger on SQLite), which has the last word when two requests race for one slot. A Google
booking kept over a live reservation (status CONFLICT) takes its slot once nothing live
holds it (`settle_conflicts`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from roombridge.booking.queries import title_for
from roombridge.booking.rules import BookingError
from roombridge.models import LIVE_STATUSES, Reservation, ReservationStatus, audit
from roombridge.unit_of_work import run_retrying

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clash:
    start: datetime
    end: datetime
    reservation_id: int
    title: str



class Conflict(BookingError):
    def __init__(self, clashes: list[Clash]):
        self.clashes = clashes
        super().__init__(
            "clashes with "
            + ", ".join(f"#{c.reservation_id} {c.title!r} at {c.start:%Y-%m-%d %H:%M}Z" for c in clashes)
        )



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
                # Shown to whoever is booking: a private meeting's title stays hidden ("Busy").
                clashes.setdefault(index, []).append(
                    Clash(other.start_at, other.end_at, other.id, title_for(other, viewer_email=None)))
    return clashes


def _is_overlap_violation(exc: IntegrityError) -> bool:
    text = str(exc.orig)
    return "reservation_overlap" in text or "ex_reservations_no_overlap" in text


class OverlapRace(Exception):
    """The database refused an overlap a concurrent booking made; raised inside the unit, answered after it."""

    def __init__(self, room_id: int, spans: Sequence[tuple[datetime, datetime]], exclude_ids: Sequence[int] = ()):
        super().__init__(f"overlap in room {room_id}")
        self.room_id, self.spans, self.exclude_ids = room_id, list(spans), list(exclude_ids)


def flush_refusing_overlap(session: Session, room_id: int, spans, exclude_ids: Sequence[int] = ()) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        if not _is_overlap_violation(exc):
            raise
        raise OverlapRace(room_id, spans, exclude_ids) from exc


def conflict_after_race(session: Session, race: OverlapRace) -> Conflict:
    """Name what the refused overlap clashed with (read after the unit rolled back)."""
    found = find_clashes(session, race.room_id, race.spans, race.exclude_ids)
    clashes = [c for per_span in found.values() for c in per_span]
    unique = list({c.reservation_id: c for c in clashes}.values())
    return Conflict(unique)


def settle_after(session: Session, room_ids: Iterable[int], actor: str) -> None:
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

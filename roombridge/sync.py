"""The sync engine: mirror a room's Google calendar into reservations, one room at a time.

`sync_room_now(session, gateway, room, config, full=False)` is the engine. It lists the
changes since the room's stored sync token (events.list, singleEvents=true, every page),
or with no token, or when Google answers 410, every event of a window (SYNC_WINDOW_DAYS_BACK
to SYNC_WINDOW_DAYS_AHEAD). It reads every page first, with no database transaction open,
so SQLite bookings are not blocked while Google answers, spooling them to a temporary file;
then it applies each event through the mirroring rules (roombridge/mirror.py), a page at a
time, and stores the new token, in ONE transaction. Memory stays at about one page. Each
event is applied in its own savepoint: one that cannot be applied (its content, or the
database refusing its row; not the database being down) is skipped and kept as a
`SkippedEvent` for admins while the rest and the token go on, so one bad event never stops
a room. A crash before that commit leaves the old token, and the next run repeats the work safely:
applying is idempotent (one reservation per (room, event id); echoes change nothing). After
a full listing, Google reservations in the window that Google no longer has are cancelled.

`run_sync(...)` is what the room's sync job (jobs/sync.py) runs under the room's lock: it
adds the pushes counted in Redis to the channel rows, syncs, and keeps a failure on the
room's sync state for admins. Asking for a sync, and its coalescing and pacing, are
roombridge/notifications.py's (`request_sync`, `take_turn`).

`RoomLock`: one sync of a room at a time across any number of workers. ``SET NX PX`` with
a random value, renewed by a heartbeat thread while the sync runs, released by a
compare-and-delete in Lua; if the worker dies, the lock expires after LOCK_TTL_SECONDS.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from redis import Redis
from sqlalchemy.orm import Session

from roombridge import notifications
from roombridge.booking import settle_conflicts
from roombridge.booking.conflicts import _is_overlap_violation as is_overlap_violation
from roombridge.checkin import follow_ended_series
from roombridge.config import Config
from roombridge.db import utcnow
from roombridge.gcal import (
    CalendarGateway,
    OverBudget,
    PermanentGoogleError,
    SyncTokenInvalid,
    signing_key,
)
from roombridge.mirror import Action, Change, GoogleEvent, decide, read_event
from roombridge.models import (
    LIVE_STATUSES,
    Reservation,
    ReservationSource,
    ReservationStatus,
    Room,
    RoomSyncState,
    SkippedEvent,
    SkipReason,
    audit,
)
from roombridge.queue import RedisLock
from roombridge.text import storable
from roombridge.unit_of_work import InvitationDue, announce, run_retrying, unit_of_work

log = logging.getLogger(__name__)

LOCK_TTL_SECONDS = 6.0  # how soon a dead worker's lock frees the room
LOCK_WAIT_SECONDS = 30.0  # how long a job waits for another worker's sync of the room
PAGE_SIZE = 250
ACTOR = "google"


# --- the per-room lock ------------------------------------------------------------------------------

class RoomLock(RedisLock):
    """The right to sync one room; expires LOCK_TTL_SECONDS after its holder stops renewing."""

    def __init__(self, conn: Redis, room_id: int, ttl_seconds: float = LOCK_TTL_SECONDS):
        super().__init__(conn, notifications.sync_key("lock", room_id), ttl_seconds)


def run_sync(session: Session, conn: Redis, gateway: CalendarGateway, config: Config, room_id: int,
              full: bool = False, *, unless_synced_since: datetime | None = None) -> SyncReport | None:
    """Sync the room if it is in scope (the caller holds its `RoomLock`); None when not synced.

    `unless_synced_since`: a sweep's plan time; a room synced since (by a push) is not synced again.
    A permanent Google error is kept on the room's sync state for admins and ends the sync;
    any other error is kept too, and raised for the job to retry. `OverBudget` is raised as it
    is: no call was made, so it says nothing about the room.
    """
    with unit_of_work(session, write=False):
        room = session.get(Room, room_id)
        if room is None or not room.in_scope:
            log.info("room %s is gone or out of scope; not synced", room_id)
            return None
        if unless_synced_since is not None:
            state = session.get(RoomSyncState, room_id, populate_existing=True)
            if state is not None and state.last_sync_at is not None and state.last_sync_at >= unless_synced_since:
                return None
    try:
        # Before the listing: pushes counted after this are followed by another sync, which adds them.
        notifications.absorb_push_stats(session, conn, room_id, utcnow())
        return sync_room_now(session, gateway, room, config, full=full)
    except OverBudget:
        raise
    except PermanentGoogleError as error:
        # Waiting will not help (unshared, forbidden, quota): keep the reason for admins.
        record_failure(session, room_id, error)
        log.warning("sync of room %s failed permanently: %s", room_id, error)
        return None
    except Exception as error:
        try:
            record_failure(session, room_id, error)
        except Exception:
            log.warning("could not record the sync failure of room %s", room_id, exc_info=True)
        raise


def record_failure(session: Session, room_id: int, error: Exception) -> None:
    with unit_of_work(session):
        state = session.get(RoomSyncState, room_id, populate_existing=True) or RoomSyncState(
            room_id=room_id, sync_count=0)
        state.last_error = str(error)[:2000]
        state.last_error_at = utcnow()
        session.add(state)


# --- the engine ------------------------------------------------------------------------------------


@dataclass
class SyncReport:
    changes: int = 0  # reservations created, updated or cancelled
    pages: int = 0
    full: bool = False
    events: int = 0  # events Google listed
    actions: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # events that could not be applied (kept as SkippedEvent rows for admins)
    skips_known: bool = False  # the room has skipped events on record: an applied one clears its own
    # (reservation id, iMIP method, event id): organisers told of a change made in Google.
    notices: list[tuple[int, str, str]] = field(default_factory=list)

    def count(self, action: Action) -> None:
        self.changes += 1
        self.actions[action.value] = self.actions.get(action.value, 0) + 1


def sync_window(config: Config, now: datetime) -> tuple[datetime, datetime]:
    return (
        now - timedelta(days=config.SYNC_WINDOW_DAYS_BACK),
        now + timedelta(days=config.SYNC_WINDOW_DAYS_AHEAD),
    )


class _Spool:
    """The events of a listing, kept in a temporary file rather than in memory.

    Pages are read with no database transaction open and applied afterwards in one; between
    the two they wait on disk, so a full sync of 10,000 events needs the memory of one page.
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.count = 0

    def add(self, page: list[dict]) -> None:
        for event in page:
            self._file.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
        self.count += len(page)

    def chunks(self, size: int) -> Iterable[list[dict]]:
        self._file.seek(0)
        chunk: list[dict] = []
        for line in self._file:
            chunk.append(json.loads(line))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def close(self) -> None:
        self._file.close()


@dataclass
class _Listing:
    events: _Spool
    next_sync_token: str | None
    pages: int
    window: tuple[datetime, datetime] | None  # set for a full listing
    started_at: datetime | None = None  # when the full listing began


def _read_all(listing, spool: _Spool) -> None:
    for page in listing.pages():
        spool.add(page)


def _list(gateway: CalendarGateway, calendar_id: str, sync_token: str | None, config: Config,
          page_size: int) -> _Listing:
    """Read every page, with no transaction open, so SQLite writers are not held up while pages arrive."""
    if sync_token:
        listing = gateway.list_events(calendar_id, sync_token=sync_token, page_size=page_size)
        spool = _Spool()
        try:
            _read_all(listing, spool)
            return _Listing(spool, listing.next_sync_token, listing.page_count, None)
        except SyncTokenInvalid:
            spool.close()
            log.info("sync token of %s is no longer valid; running a full sync", calendar_id)
        except BaseException:
            spool.close()
            raise
    started_at = utcnow()
    window = sync_window(config, started_at)
    listing = gateway.list_events(calendar_id, time_min=window[0], time_max=window[1], page_size=page_size)
    spool = _Spool()
    try:
        _read_all(listing, spool)
    except BaseException:
        spool.close()
        raise
    return _Listing(spool, listing.next_sync_token, listing.page_count, window, started_at)


def sync_room_now(session: Session, gateway: CalendarGateway, room: Room, config: Config,
                  full: bool = False, *, page_size: int = PAGE_SIZE) -> SyncReport:
    """Sync one room now, in this process; the caller makes sure no other sync of it runs."""
    room_id, calendar_id, time_zone = room.id, room.calendar_id, room.time_zone
    with unit_of_work(session, write=False):
        state = session.get(RoomSyncState, room_id, populate_existing=True)
        token = None if full or state is None else state.sync_token
    listing = _list(gateway, calendar_id, token, config, page_size)
    report = SyncReport(pages=listing.pages, full=listing.window is not None, events=listing.events.count)

    # One write unit from here: every change, then the new token; organisers are told after the commit.
    try:
        with unit_of_work(session):
            _apply_listing(session, room_id, calendar_id, time_zone, listing, report, page_size)
            if not config.delegated_mode:
                _tell_organisers(session, report.notices)
    finally:
        listing.events.close()
    log.info("synced room %s: %d event(s), %d change(s), %d page(s)%s", room_id, report.events,
             report.changes, report.pages, " (full)" if report.full else "")
    if report.changes:
        # A booking here cancelled or moved in Google may free a slot a conflict is waiting for.
        run_retrying(session, lambda: settle_conflicts(session, [room_id], actor=ACTOR))
    return report


def _apply_listing(session: Session, room_id: int, calendar_id: str, time_zone: str, listing: _Listing,
                   report: SyncReport, page_size: int) -> None:
    full_listing = listing.window is not None
    report.skips_known = session.scalar(
        sa.select(sa.func.count()).select_from(SkippedEvent).where(SkippedEvent.room_id == room_id)) > 0
    if full_listing:
        _start_seen(session)
    key = signing_key()
    for chunk in listing.events.chunks(page_size):
        seen = []
        for raw in chunk:
            event_id = _apply_one(session, room_id, calendar_id, time_zone, key, raw, report)
            if event_id is not None:
                seen.append(event_id)
        if full_listing and seen:
            session.execute(SEEN_EVENTS.insert(), [{"event_id": event_id} for event_id in seen])
        # Send this page's changes to the database (same transaction) and let the session
        # forget them, so memory stays at one page however many events the room has.
        session.flush()
        session.expunge_all()
    if full_listing:
        cancel_vanished(session, room_id, calendar_id, listing.window, listing.started_at, report)
        session.execute(sa.text(f"DROP TABLE IF EXISTS {SEEN_EVENTS.name}"))

    state = session.get(RoomSyncState, room_id) or RoomSyncState(room_id=room_id, sync_count=0)
    now = utcnow()
    state.sync_token = listing.next_sync_token
    state.last_sync_at = now
    if report.full:
        state.last_full_sync_at = now
    state.sync_count = (state.sync_count or 0) + 1
    state.last_error = None
    state.last_error_at = None
    session.add(state)


def find_mirror(session: Session, room_id: int, event: GoogleEvent) -> Reservation | None:
    """The reservation mirroring this event: by the event id stored on it, else ours by its signed property.

    Never by decoding the event id: anyone who may write to the room calendar can give an event
    the id we would give one of our reservations, and must not take that reservation over.
    """
    found = session.scalar(
        sa.select(Reservation).where(Reservation.room_id == room_id, Reservation.google_event_id == event.event_id)
    )
    if found is not None or event.own_reservation_id is None or event.recurring_event_id:
        # An instance of our series carries the series' property (its first reservation's id), not
        # its own: only the instance id stored on an occurrence says which one it is.
        return found
    reservation = session.get(Reservation, event.own_reservation_id)
    if (
        reservation is not None
        and reservation.room_id == room_id
        and reservation.source != ReservationSource.GOOGLE
        and reservation.google_event_id in (None, event.event_id)
    ):
        return reservation
    return None


# What one event may fail with and be skipped for: its content (times, fields) or the database
# refusing its row. Not the database being unreachable (OperationalError): that fails the sync.
SKIPPABLE = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, LookupError,
             sa.exc.DataError, sa.exc.IntegrityError)


def _apply_one(session: Session, room_id: int, calendar_id: str, time_zone: str, key: str, raw: dict,
               report: SyncReport) -> str | None:
    """Apply one listed event in its own savepoint; one that fails is recorded and skipped, not fatal.

    Returns the event's (storable) id, or None when the item has no id at all.
    """
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    event_id = storable(raw_id)[:1024] if isinstance(raw_id, str) else None
    reason = SkipReason.UNREADABLE
    try:
        with session.begin_nested():
            event = read_event(raw, calendar_id, time_zone, key)
            reason = SkipReason.NOT_APPLIED
            apply_event(session, room_id, event, report)
    except SKIPPABLE as error:
        if isinstance(error, sa.exc.IntegrityError) and is_overlap_violation(error):
            # A booking committed meanwhile (PostgreSQL): the retried sync sees it and keeps a conflict.
            raise
        log.warning("sync of room %s skipped event %r (%s): %r", room_id, event_id, reason.value, error)
        report.skipped += 1
        if event_id is not None:
            _record_skip(session, room_id, event_id, reason, error)
        return event_id
    if event_id is not None and report.skips_known:
        session.execute(sa.delete(SkippedEvent).where(SkippedEvent.room_id == room_id,
                                                      SkippedEvent.event_id == event_id))
    return event_id


def _record_skip(session: Session, room_id: int, event_id: str, reason: SkipReason, error: Exception) -> None:
    text = storable(f"{type(error).__name__}: {error}")[:2000]
    now = utcnow()
    row = session.scalar(sa.select(SkippedEvent).where(SkippedEvent.room_id == room_id,
                                                       SkippedEvent.event_id == event_id))
    if row is None:
        session.add(SkippedEvent(room_id=room_id, event_id=event_id, reason=reason, error=text,
                                 first_skipped_at=now, last_skipped_at=now, times=1))
    else:
        row.reason, row.error, row.last_skipped_at, row.times = reason, text, now, row.times + 1
    session.flush()


def live_clashes(session: Session, room_id: int, event: GoogleEvent, exclude_id: int | None) -> list[Reservation]:
    query = sa.select(Reservation).where(
        Reservation.room_id == room_id,
        Reservation.status.in_(LIVE_STATUSES),
        Reservation.start_at < event.end_at,
        Reservation.end_at > event.start_at,
    )
    if exclude_id is not None:
        query = query.where(Reservation.id != exclude_id)
    return list(session.scalars(query))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return value


def apply_event(session: Session, room_id: int, event: GoogleEvent, report: SyncReport) -> Change:
    current = find_mirror(session, room_id, event)
    clashes = live_clashes(session, room_id, event, current.id if current else None) if event.is_booking else []
    change = decide(event, current, clashes)
    if change.is_noop:
        return change
    if change.action is Action.CREATE:
        reservation = Reservation(room_id=room_id, **change.fields)
        session.add(reservation)
        session.flush()
        audit(session, ACTOR, "reservation.imported", reservation, event_id=event.event_id, reason=change.reason,
              status=reservation.status.value)
        if event.recurring_event_id:  # an instance of a series the room ended: declined like the others
            follow_ended_series(session, reservation)
    else:
        assert current is not None
        before = {name: _jsonable(getattr(current, name)) for name in change.fields}
        for name, value in change.fields.items():
            setattr(current, name, value)
        if current.google_event_id is None:
            current.google_event_id = event.event_id
        session.flush()
        after = {name: _jsonable(value) for name, value in change.fields.items()}
        changed = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
        cancelled = change.action is Action.CANCEL
        action = "reservation.cancelled_in_google" if cancelled else "reservation.changed_in_google"
        audit(session, ACTOR, action, current, event_id=event.event_id, reason=change.reason, changes=changed)
        if change.notify_organiser:
            if change.action is Action.CANCEL:
                report.notices.append((current.id, "CANCEL", event.event_id))
            elif current.status == ReservationStatus.CONFIRMED:
                report.notices.append((current.id, "REQUEST", event.event_id))
    report.count(change.action)
    return change


# The event ids a full listing returned, in a temporary table of the sync's own transaction:
# the check for what vanished is then one query, and memory does not grow with the events.
SEEN_EVENTS = sa.table("sync_seen_events", sa.column("event_id", sa.String))


def _start_seen(session: Session) -> None:
    session.execute(sa.text(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {SEEN_EVENTS.name} (event_id VARCHAR(1024) NOT NULL)"
    ))
    session.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {SEEN_EVENTS.name}_id ON {SEEN_EVENTS.name} (event_id)"))
    session.execute(SEEN_EVENTS.delete())  # SQLite keeps a temporary table for the connection's life


def cancel_vanished(session: Session, room_id: int, calendar_id: str, window: tuple[datetime, datetime],
                    listed_at: datetime, report: SyncReport) -> None:
    """After a full listing, cancel what Google no longer has in the window.

    Google bookings: cancelled. Ours: a confirmed reservation whose event we last saw
    before the listing began was deleted in Google (a full listing leaves deleted events
    out), so it is cancelled and the organiser told. One written after the listing began
    may simply be too new to be listed, and is left alone.
    """
    vanished = session.scalars(sa.select(Reservation.id).where(
        Reservation.room_id == room_id,
        Reservation.google_event_id.is_not(None),
        Reservation.status.in_([*LIVE_STATUSES, ReservationStatus.CONFLICT]),
        Reservation.end_at > window[0],
        Reservation.start_at < window[1],
        ~sa.exists().where(SEEN_EVENTS.c.event_id == Reservation.google_event_id),
    )).all()
    for start in range(0, len(vanished), PAGE_SIZE):
        batch = vanished[start:start + PAGE_SIZE]
        for reservation in session.scalars(sa.select(Reservation).where(Reservation.id.in_(batch))):
            _cancel_vanished_one(session, reservation, calendar_id, listed_at, report)
        session.flush()  # the audit entries too, before the session forgets them
        session.expunge_all()


def _cancel_vanished_one(session: Session, reservation: Reservation, calendar_id: str, listed_at: datetime,
                         report: SyncReport) -> None:
    own = reservation.source != ReservationSource.GOOGLE
    if own and not (
        reservation.status == ReservationStatus.CONFIRMED
        and reservation.google_calendar_id == calendar_id
        and reservation.google_updated_at is not None
        and reservation.google_updated_at < listed_at
    ):
        return
    reservation.status = ReservationStatus.CANCELLED
    reservation.status_reason = "deleted in Google" if own else "no longer in Google"
    reservation.conflict_with_id = None
    session.flush()
    audit(session, ACTOR, "reservation.cancelled_in_google", reservation,
          event_id=reservation.google_event_id, reason="no longer in Google (full sync)")
    if own:
        report.notices.append((reservation.id, "CANCEL", reservation.google_event_id))
    report.count(Action.CANCEL)


def _tell_organisers(session: Session, notices: list[tuple[int, str, str]]) -> None:
    """Room mode: mail the organiser (and attendees) the booking as Google now has it, after the commit.

    In delegated mode the people are Google attendees and Google tells them. A change that
    left our reservation in CONFLICT gets no update mail (the audit log and the admin page
    carry it): the invitation would announce a slot the room does not hold.
    """
    for reservation_id, _method, _event_id in notices:
        # The mail job works out what to send from what people were sent (roombridge/invitations.py).
        announce(session, InvitationDue(reservation_id))

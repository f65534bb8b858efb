"""The unit of work: who owns a transaction, and what happens once it has committed.

Every request, job and CLI command does its database work in units of work::

    with unit_of_work(session):          # a write: SQLite takes its write lock here
        booking.cancel(...)              # domain code adds, flushes, announces; never commits

A unit of work begins as a WRITE transaction when it may write. On SQLite that is
``BEGIN IMMEDIATE``, taken here and nowhere else: in WAL mode a deferred transaction that
read first cannot upgrade to a write once another process committed in between, and SQLite
answers "database is locked" at once, without waiting out the busy timeout. Taking the lock
at BEGIN makes that impossible; readers are never blocked in WAL. On PostgreSQL a write
unit is an ordinary transaction. ``write=False`` opens a read unit (a deferred BEGIN).

The unit commits at its end, or rolls back if its body raised. Only after a successful
commit does it hand what the domain announced (`ReservationChanged`, `InvitationDue`, ...)
to the handlers that `jobs/` registers (`subscribe`); so a job never sees a row that might
still roll back, and the core never imports the code that runs its jobs. A handler that
fails after the commit (Redis down) loses nothing: the work stays visible in the database
(a reservation stays pending, and `requeue_stale_pending` queues its write again).

A unit of work opened inside another on the same session joins it: it neither commits nor
dispatches, the outer one does. Google is never called inside an open write unit: code
that talks to Google reads in one unit, calls Google with none open, and records the
answer in another, short one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from flask import Flask, current_app, has_app_context
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from roombridge import db

log = logging.getLogger(__name__)

T = TypeVar("T")


# --- what the core announces ------------------------------------------------------------------


@dataclass(frozen=True)
class ReservationChanged:
    """The reservation's row changed: its Google event must be written (inserted, patched, moved, deleted)."""

    reservation_id: int


@dataclass(frozen=True)
class InvitationDue:
    """Room mode: people may hold another version of the reservation than Google now has: mail them.

    The mail job works out what to send (REQUEST, CANCEL, to whom) from the reservation and
    what people were last sent (roombridge/invitations.py: `due_mails`).
    """

    reservation_id: int


@dataclass(frozen=True)
class SyncRequested:
    """A room's sync was asked for and its coalescing marker set: a sync job must run (roombridge/sync.py).

    `paced`: a first sync of an added room, on the rolling safety net's queue and budget share
    (roombridge/sweep.py); no coalescing marker is set for it.
    """

    room_id: int
    paced: bool = False
    full: bool = False


@dataclass(frozen=True)
class ChannelOpened:
    """A watch channel was opened: its own renewal must run at `renew_at` (roombridge/channels.py)."""

    channel_id: str
    renew_at: datetime


HANDLERS_KEY = "roombridge.handlers"


def subscribe(app: Flask, event_type: type, handler: Callable[[object], None]) -> None:
    """Let `handler(event)` run for every `event_type` announced in `app` (jobs/ registers its enqueues)."""
    handlers = app.extensions.setdefault(HANDLERS_KEY, {}).setdefault(event_type, [])
    if handler not in handlers:
        handlers.append(handler)


def dispatch(event: object) -> None:
    """Run the handlers of `event` now; their errors propagate to the caller."""
    handlers = current_app.extensions.get(HANDLERS_KEY, {}).get(type(event), []) if has_app_context() else []
    if not handlers:
        raise RuntimeError(f"nothing handles {type(event).__name__}: the app was built without jobs.install()")
    for handler in handlers:
        handler(event)


def announce(session: Session, event: object) -> None:
    """Record `event` for dispatch once the session's unit of work has committed."""
    _current(session).events.append(event)


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback()` once the session's unit of work has committed (a failure is only logged)."""
    _current(session).callbacks.append(callback)


# --- the unit of work ---------------------------------------------------------------------------

STATE_KEY = "roombridge.unit_of_work"


@dataclass
class _Unit:
    write: bool
    depth: int = 1
    events: list[object] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)


def _current(session: Session) -> _Unit:
    unit = session.info.get(STATE_KEY)
    if unit is None:
        raise RuntimeError("announced outside a unit of work: wrap the call in unit_of_work(session)")
    return unit


def in_unit_of_work(session: Session) -> bool:
    return STATE_KEY in session.info


def outside_units(session: Session) -> None:
    """Refuse to go on inside a unit of work: the caller is about to call Google between units of its own."""
    if in_unit_of_work(session):
        raise RuntimeError("this calls Google, so it opens its own units of work: call it outside any")


@contextmanager
def unit_of_work(session: Session | None = None, *, write: bool = True) -> Iterator[Session]:
    """Own `session`'s transaction (default: the app context's) for the body; see the module docstring."""
    session = db.session() if session is None else session
    unit = session.info.get(STATE_KEY)
    if unit is not None:
        if write and not unit.write:
            raise RuntimeError("a write unit of work cannot join a read-only one")
        unit.depth += 1
        try:
            yield session
        finally:
            unit.depth -= 1
        return

    end_read(session)
    if write:
        db.begin_write_transaction(session)
    unit = session.info[STATE_KEY] = _Unit(write=write)
    try:
        yield session
        session.commit()
    except BaseException:
        session.info.pop(STATE_KEY, None)
        session.rollback()
        raise
    session.info.pop(STATE_KEY, None)
    _after_commit(unit)


def end_read(session: Session) -> None:
    """End a transaction that only read (outside any unit), so no snapshot is held while we wait on Google."""
    if in_unit_of_work(session):
        raise RuntimeError("end_read() inside a unit of work: its end is the unit's")
    if not session.in_transaction():
        return
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("changes made outside a unit of work")
    # Unlike rollback, keeps the loaded objects usable. (Rows already flushed outside any unit,
    # as test factories do, are committed with it; domain code never writes outside a unit.)
    session.commit()


def _after_commit(unit: _Unit) -> None:
    for event in unit.events:
        try:
            dispatch(event)
        except Exception:
            # Committed is committed. What the event asked for is still visible in the database
            # (a pending reservation is queued again by requeue_stale_pending); say it and go on.
            log.warning("could not hand on %s after commit", event, exc_info=True)
    for callback in unit.callbacks:
        try:
            callback()
        except Exception:
            log.warning("after-commit step %s failed", getattr(callback, "__name__", callback), exc_info=True)


# --- units the database aborted to break a deadlock -----------------------------------------------

DEADLOCK_RETRIES = 5
# PostgreSQL: deadlock detected, serialization failure. Bookings racing for one slot can make
# the exclusion constraint's waits form a cycle; PostgreSQL then aborts one of them.
TRANSIENT_SQLSTATES = {"40P01", "40001"}


def run_retrying(session: Session, work: Callable[[], T], *, attempts: int = DEADLOCK_RETRIES) -> T:
    """`work()` in its own write unit of work, run again when the database aborted it to break a deadlock.

    The retry starts afresh: by then the winner of the race has committed, so the retry either
    finds the clash and says so, or (the winner lost too) succeeds.
    """
    if in_unit_of_work(session):
        return work()  # joined: the outer unit owns the transaction, and its retry
    for tries in range(1, attempts + 1):
        try:
            with unit_of_work(session):
                return work()
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) not in TRANSIENT_SQLSTATES or tries == attempts:
                raise
            log.info("unit of work aborted by the database (%s); trying again", exc.orig.sqlstate)
            time.sleep(random.uniform(0.05, 0.1) * tries)
    raise AssertionError("unreachable")

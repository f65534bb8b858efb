"""Jobs that publish reservations to their room's Google calendar, and mail invitations.

Thin: each takes ids, and calls the core (roombridge/publish.py, roombridge/invitations.py),
which opens its units of work. What stays here is how the jobs run: the queue, the retries,
and the per-reservation lock that keeps two writes of one reservation from overtaking each
other.

`requeue_stale_pending` is the safety net for a write that never ran (Redis was down right
after the commit, or every retry was used up while Google was down).
"""

from __future__ import annotations

import logging
import smtplib
from datetime import UTC, datetime

from flask import current_app
from rq import Retry

from jobs import job
from roombridge import db, invitations, publish
from roombridge.config import Config
from roombridge.gcal import CalendarGateway, RetriableGoogleError
from roombridge.queue import RedisLock, redis
from roombridge.unit_of_work import InvitationDue, ReservationChanged, unit_of_work

log = logging.getLogger(__name__)

REQUEUE_GUARD_SECONDS = 300  # at most one re-queue per reservation per this many seconds
WRITE_LOCK_TTL_SECONDS = 30.0
WRITE_LOCK_WAIT_SECONDS = 60.0
MAIL_LOCK_TTL_SECONDS = 30.0  # renewed while held
MAIL_LOCK_WAIT_SECONDS = 30.0


class WriteBusy(RetriableGoogleError):
    """Another worker is still writing this reservation to Google; try again later."""


@job("write", timeout=120, retry=Retry(max=5, interval=[5, 30, 120, 300, 600]))
def write_reservation(reservation_id: int) -> str:
    """Make the room's Google calendar match the reservation; returns what was done.

    One write per reservation at a time, across workers: two quick edits queue two jobs, and
    without the lock the older one's Google write could land after the newer one's. Each
    job writes the reservation as stored when it starts, so running them in turn is enough.
    """
    lock = RedisLock(redis(), f"roombridge:write:lock:{reservation_id}", WRITE_LOCK_TTL_SECONDS)
    if not lock.acquire(wait_seconds=WRITE_LOCK_WAIT_SECONDS):
        raise WriteBusy(f"reservation {reservation_id} is being written by another worker", reason="busy")
    try:
        return publish.publish_reservation(db.session(), current_app.config["ROOMBRIDGE"],
                                           CalendarGateway.for_app(kind="write"), reservation_id)
    finally:
        lock.release()


def on_reservation_changed(event: ReservationChanged) -> None:
    write_reservation.enqueue(event.reservation_id)


def on_invitation_due(event: InvitationDue) -> None:
    send_invitations.enqueue(event.reservation_id)


class MailBusy(Exception):
    """Another worker is mailing this reservation's people; try again later."""


@job("default", timeout=60, retry=Retry(max=5, interval=[10, 60, 300, 900, 3600]))
def send_invitations(reservation_id: int, *_queued_before_0011) -> str:
    """Mail people what their calendars lack of the reservation (room mode); SMTP errors are retried.

    One at a time per reservation, across workers: each reads what people were last sent
    and records what it sent, so two at once could send one update twice or record the
    older one last. (Jobs queued before revision 0011 carry a method, recipients and an
    event id; the reservation and what was sent now say all of that.)
    """
    config: Config = current_app.config["ROOMBRIDGE"]
    # The occurrences of a series share one lock: the job of any of them mails the series too.
    name = invitations.mail_lock_name(db.session(), reservation_id)
    lock = RedisLock(redis(), f"roombridge:mail:lock:{name}", MAIL_LOCK_TTL_SECONDS)
    if not lock.acquire(wait_seconds=MAIL_LOCK_WAIT_SECONDS):
        raise MailBusy(f"reservation {reservation_id} is being mailed by another worker")
    try:
        return invitations.mail_invitations(db.session(), config, reservation_id)
    except (OSError, smtplib.SMTPException):
        log.warning("could not mail the people of reservation %s; will retry", reservation_id, exc_info=True)
        raise
    finally:
        lock.release()


@job("channels", timeout=120)
def requeue_stale_pending(now: datetime | None = None) -> list[int]:
    """Queue again the Google writes that should have happened by now; returns their ids."""
    now = now or datetime.now(UTC)
    with unit_of_work(write=False) as session:
        ids = publish.stale_reservation_ids(session, now)
    queued = []
    conn = redis()
    for reservation_id in ids:
        # One re-queue per reservation per guard period: a long Google outage must not pile up jobs.
        if conn.set(f"roombridge:requeue:{reservation_id}", 1, nx=True, ex=REQUEUE_GUARD_SECONDS):
            write_reservation.enqueue(reservation_id)
            queued.append(reservation_id)
    if queued:
        log.info("re-queued the Google write of %d stale reservation(s)", len(queued))
    return queued

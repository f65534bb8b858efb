"""Jobs that write reservations to their room's Google calendar, and mail invitations.

`push_reservation(id)` makes Google match the reservation as stored now, whatever happened
before: it inserts the event under its deterministic id (a retry cannot duplicate it),
patches it after an edit, moves it after a change of room, deletes it after a cancel.
Retriable Google errors are raised for RQ to retry with backoff; permanent ones mark the
reservation failed with the reason and end the job normally: the reservation is kept.

`requeue_stale_pending` is the safety net for a push that never ran (Redis was down right
after the commit, or every retry was used up while Google was down).
"""

from __future__ import annotations

import logging
import smtplib
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from rq import Retry
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from jobs import job
from roombridge import db
from roombridge.booking import event_description, room_zone
from roombridge.config import Config
from roombridge.db import begin_write
from roombridge.gcal import (
    RESERVATION_PROPERTY,
    CalendarGateway,
    EventIdTaken,
    EventNotFound,
    PermanentGoogleError,
    RetriableGoogleError,
    event_id_for,
)
from roombridge.models import Reservation, ReservationSource, ReservationStatus, audit
from roombridge.queue import RedisLock, redis

log = logging.getLogger(__name__)

# A push still pending after this long has lost its job (or used up its retries): queue it again.
STALE_AFTER = timedelta(minutes=5)
REQUEUE_GUARD_SECONDS = 300  # at most one re-queue per reservation per this many seconds


def event_body(reservation: Reservation, config: Config) -> dict:
    """The Google event for a reservation, in the room's time zone.

    Room mode: no Google attendees (Google answers 403 forbiddenForServiceAccounts); the
    description names who is invited so the room calendar shows it. Delegated mode: the
    booker and the attendees are Google attendees and Google invites them.
    """
    room = reservation.room
    zone = room_zone(room)
    body: dict = {
        "summary": reservation.title,
        "description": event_description(reservation, delegated=config.delegated_mode),
        "location": room.name,
        "start": {"dateTime": reservation.start_at.astimezone(zone).isoformat(), "timeZone": str(zone)},
        "end": {"dateTime": reservation.end_at.astimezone(zone).isoformat(), "timeZone": str(zone)},
        "extendedProperties": {"private": {RESERVATION_PROPERTY: str(reservation.id)}},
    }
    if config.delegated_mode:
        people = [reservation.organiser_email] + [a for a in reservation.attendees or []
                                                  if a != reservation.organiser_email]
        body["attendees"] = [{"email": address} for address in people]
    return body


def _send_updates(config: Config) -> str:
    return "all" if config.delegated_mode else "none"


def _parse_rfc3339(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


PUSH_LOCK_TTL_SECONDS = 30.0
PUSH_LOCK_WAIT_SECONDS = 60.0


class PushBusy(RetriableGoogleError):
    """Another worker is still writing this reservation to Google; try again later."""


@job("push", timeout=120, retry=Retry(max=5, interval=[5, 30, 120, 300, 600]))
def push_reservation(reservation_id: int) -> str:
    """Make the room's Google calendar match the reservation; returns what was done.

    One push per reservation at a time, across workers: two quick edits queue two jobs, and
    without the lock the older one's Google write could land after the newer one's. Each
    job writes the reservation as stored when it starts, so running them in turn is enough.
    """
    lock = RedisLock(redis(), f"roombridge:push:lock:{reservation_id}", PUSH_LOCK_TTL_SECONDS)
    if not lock.acquire(wait_seconds=PUSH_LOCK_WAIT_SECONDS):
        raise PushBusy(f"reservation {reservation_id} is being written by another worker", reason="busy")
    try:
        return _push(reservation_id)
    finally:
        lock.release()


def _push(reservation_id: int) -> str:
    session = db.session()
    config: Config = current_app.config["ROOMBRIDGE"]
    reservation = session.get(Reservation, reservation_id)
    if reservation is None:
        return "gone"
    if reservation.source == ReservationSource.GOOGLE:
        return "google's own"  # made in Google: the sync engine mirrors it, we never write it
    gateway = CalendarGateway.for_app(kind="write")
    try:
        if reservation.status == ReservationStatus.CANCELLED:
            return _delete(session, config, gateway, reservation)
        if reservation.status != ReservationStatus.PENDING:
            return f"nothing to do ({reservation.status})"
        return _write(session, config, gateway, reservation)
    except PermanentGoogleError as error:
        session.rollback()
        return _mark_failed(session, reservation_id, error)


def _mark_failed(session: Session, reservation_id: int, error: PermanentGoogleError) -> str:
    begin_write(session)
    reservation = session.get(Reservation, reservation_id)
    reason = f"{error.reason or error.status or 'error'}: {error.message}"
    if reservation.status == ReservationStatus.CANCELLED:
        # The booking is gone here; an event left behind in Google is the sync engine's to see.
        reservation.status_reason = f"{reservation.status_reason or 'cancelled'}; Google delete failed: {reason}"
    else:
        reservation.status = ReservationStatus.FAILED
        reservation.status_reason = reason
    audit(session, "system", "reservation.push_failed", reservation, reason=reason)
    session.commit()
    log.warning("reservation %s: Google refused the write: %s", reservation_id, reason)
    return "failed"


def _delete(session: Session, config: Config, gateway: CalendarGateway, reservation: Reservation) -> str:
    if not (reservation.google_calendar_id and reservation.google_event_id):
        return "nothing in Google"
    event_id = reservation.google_event_id
    gateway.delete_event(reservation.google_calendar_id, event_id, send_updates=_send_updates(config))
    _record(session, reservation, google_calendar_id=None)
    if not config.delegated_mode:
        send_invitations.enqueue(reservation.id, "CANCEL", None, event_id)
    return "deleted"


def _write(session: Session, config: Config, gateway: CalendarGateway, reservation: Reservation) -> str:
    room = reservation.room
    calendar_id = room.calendar_id
    send_updates = _send_updates(config)
    done = []
    if reservation.google_calendar_id and reservation.google_calendar_id != calendar_id:
        # Moved to another room: its calendar gets a new event, the old room's is deleted.
        old_calendar, old_event = reservation.google_calendar_id, reservation.google_event_id
        try:
            gateway.delete_event(old_calendar, old_event, send_updates=send_updates)
        except PermanentGoogleError as error:
            log.warning("reservation %s: could not delete the event on %s: %s", reservation.id, old_calendar, error)
        _record(session, reservation, google_calendar_id=None, google_event_id=None,
                google_revision=reservation.google_revision + 1)
        if not config.delegated_mode and old_event:
            send_invitations.enqueue(reservation.id, "CANCEL", None, old_event)
        done.append("moved")

    body = event_body(reservation, config)
    revision = reservation.google_revision
    if reservation.google_calendar_id is None:
        event, revision = _insert(gateway, calendar_id, reservation.id, revision, body, send_updates)
        done.append("inserted")
    else:
        try:
            event = gateway.patch_event(calendar_id, reservation.google_event_id, body, send_updates=send_updates)
            done.append("patched")
        except EventNotFound:
            # Deleted in Google behind our back; the id cannot be used again.
            event, revision = _insert(gateway, calendar_id, reservation.id, revision + 1, body, send_updates)
            done.append("re-inserted")

    confirmed = _record(
        session,
        reservation,
        google_event_id=event["id"],
        google_calendar_id=calendar_id,
        google_revision=revision,
        google_etag=event.get("etag"),
        google_updated_at=_parse_rfc3339(event.get("updated")),
        status=ReservationStatus.CONFIRMED,
        status_reason=None,
    )
    if confirmed and not config.delegated_mode:
        send_invitations.enqueue(reservation.id, "REQUEST", None, None)
    return " and ".join(done)


def _insert(gateway: CalendarGateway, calendar_id: str, reservation_id: int, revision: int, body: dict,
            send_updates: str) -> tuple[dict, int]:
    for _ in range(3):
        try:
            event = gateway.insert_event(calendar_id, event_id_for(reservation_id, revision), body,
                                         send_updates=send_updates)
            return event, revision
        except EventIdTaken:
            revision += 1
    raise PermanentGoogleError("no free event id after three revisions", reason="duplicate")


GOOGLE_FACTS = ("google_event_id", "google_calendar_id", "google_revision", "google_etag", "google_updated_at")


def _record(session: Session, reservation: Reservation, **changes) -> bool:
    """Write what Google now holds; True if all of it (status included) was committed.

    The transaction that read the reservation held no lock while Google was called; the
    write takes it now. If an edit changed the row meanwhile (the version column says so),
    only where the event lives is kept: the edit queued another push, which brings Google
    up to date from there.
    """
    begin_write(session)
    for name, value in changes.items():
        setattr(reservation, name, value)
    try:
        session.commit()
        return True
    except StaleDataError:
        session.rollback()
        begin_write(session)
        facts = {name: value for name, value in changes.items() if name in GOOGLE_FACTS}
        session.execute(sa.update(Reservation).where(Reservation.id == reservation.id).values(**facts))
        session.commit()
        return False


@job("default", timeout=60, retry=Retry(max=5, interval=[10, 60, 300, 900, 3600]))
def send_invitations(reservation_id: int, method: str, recipients: list[str] | None = None,
                     event_id: str | None = None) -> str:
    """Mail an iMIP REQUEST or CANCEL for the reservation (room mode); SMTP errors are retried."""
    from roombridge import invitations

    config: Config = current_app.config["ROOMBRIDGE"]
    reservation = db.session().get(Reservation, reservation_id)
    if reservation is None:
        return "gone"
    if method == "REQUEST" and reservation.status != ReservationStatus.CONFIRMED:
        return "superseded"  # changed again since; the next push sends the invitation
    invitation = invitations.build_invitation(reservation, method, event_id=event_id, recipients=recipients)
    message = invitations.to_email(invitation, config.MAIL_FROM)
    try:
        sent = invitations.send(message, config.SMTP_URL)
    except (OSError, smtplib.SMTPException):
        log.warning("could not mail the %s of reservation %s; will retry", method, reservation_id, exc_info=True)
        raise
    return f"sent to {len(invitation.recipients)}" if sent else "skipped (no SMTP_URL)"


@job("channels", timeout=120)
def requeue_stale_pending(now: datetime | None = None) -> list[int]:
    """Queue again the Google writes that should have happened by now; returns their ids."""
    from roombridge.queue import redis

    now = now or datetime.now(UTC)
    session = db.session()
    stale = now - STALE_AFTER
    ids = session.scalars(
        sa.select(Reservation.id).where(
            Reservation.source != ReservationSource.GOOGLE,
            Reservation.updated_at < stale,
            sa.or_(
                Reservation.status == ReservationStatus.PENDING,
                # cancelled here but the event still stands in Google
                sa.and_(Reservation.status == ReservationStatus.CANCELLED,
                        Reservation.google_calendar_id.is_not(None),
                        Reservation.status_reason.not_like("%Google delete failed%")),
            ),
        ).order_by(Reservation.id).limit(1000)
    ).all()
    queued = []
    conn = redis()
    for reservation_id in ids:
        # One re-queue per reservation per guard period: a long Google outage must not pile up jobs.
        if conn.set(f"roombridge:requeue:{reservation_id}", 1, nx=True, ex=REQUEUE_GUARD_SECONDS):
            push_reservation.enqueue(reservation_id)
            queued.append(reservation_id)
    if queued:
        log.info("re-queued the Google write of %d stale reservation(s)", len(queued))
    return queued

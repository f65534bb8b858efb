"""Publishing reservations: make the room's Google calendar match each reservation as stored.

`publish_reservation(id)` inserts the event under its deterministic id (a retry cannot
duplicate it), patches it after an edit, moves it after a change of room, deletes it after
a cancel. It reads in one unit of work, calls Google with none open, and records Google's
answer in a short write unit (roombridge/unit_of_work.py). Retriable Google errors
propagate for the caller (the write job) to retry with backoff; permanent ones mark the
reservation failed with the reason: the reservation is kept.

`stale_reservation_ids` finds the writes that should have happened by now (Redis was down
right after the commit, or every retry was used up while Google was down).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from roombridge.config import Config
from roombridge.gcal import (
    CalendarGateway,
    EventIdTaken,
    EventNotFound,
    PermanentGoogleError,
    event_id_for,
    own_properties,
    signing_key,
)
from roombridge.models import ReleaseReason, Reservation, ReservationSource, ReservationStatus, audit
from roombridge.unit_of_work import InvitationDue, announce, unit_of_work

log = logging.getLogger(__name__)

# A write still pending after this long has lost its job (or used up its retries): queue it again.
STALE_AFTER = timedelta(minutes=5)


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


def event_body(reservation: Reservation, config: Config) -> dict:
    """The Google event for a reservation, in the room's time zone.

    Room mode: no Google attendees (Google answers 403 forbiddenForServiceAccounts); the
    description names who is invited so the room calendar shows it. Delegated mode: the
    booker and the attendees are Google attendees and Google invites them.
    """
    room = reservation.room
    zone = room.zone
    body: dict = {
        "summary": reservation.title,
        "description": event_description(reservation, delegated=config.delegated_mode),
        "location": room.name,
        "start": {"dateTime": reservation.start_at.astimezone(zone).isoformat(), "timeZone": str(zone)},
        "end": {"dateTime": reservation.end_at.astimezone(zone).isoformat(), "timeZone": str(zone)},
        "extendedProperties": {"private": own_properties(reservation.id, signing_key())},
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


def publish_reservation(session: Session, config: Config, gateway: CalendarGateway, reservation_id: int) -> str:
    """Make the room's Google calendar match the reservation; returns what was done.

    The caller makes sure only one publish of a reservation runs at a time (jobs/reservations.py).
    """
    with unit_of_work(session, write=False):
        reservation = session.get(Reservation, reservation_id, populate_existing=True)
        if reservation is None:
            return "gone"
        status = reservation.status
        _ = reservation.room  # loaded now, inside the read
        if reservation.source == ReservationSource.GOOGLE and not _room_declines(reservation):
            return "google's own"  # made in Google: the sync engine mirrors it, we never write it
    try:
        if reservation.source == ReservationSource.GOOGLE:
            return _decline_as_room(session, gateway, reservation, _decline_comment(reservation))
        if status in (ReservationStatus.CANCELLED, ReservationStatus.RELEASED):
            return _delete(session, config, gateway, reservation)
        if status != ReservationStatus.PENDING:
            return f"nothing to do ({status})"
        return _write(session, config, gateway, reservation)
    except PermanentGoogleError as error:
        return _mark_failed(session, reservation_id, error)


def _mark_failed(session: Session, reservation_id: int, error: PermanentGoogleError) -> str:
    reason = f"{error.reason or error.status or 'error'}: {error.message}"
    with unit_of_work(session):
        reservation = session.get(Reservation, reservation_id, populate_existing=True)
        if reservation.status in (ReservationStatus.CANCELLED, ReservationStatus.RELEASED):
            # The booking is gone here; an event left behind in Google is the sync engine's to see.
            reservation.status_reason = f"{reservation.status_reason or 'cancelled'}; Google delete failed: {reason}"
            reservation.google_delete_failed = True
        else:
            reservation.status = ReservationStatus.FAILED
            reservation.status_reason = reason
        audit(session, "system", "reservation.push_failed", reservation, reason=reason)
    log.warning("reservation %s: Google refused the write: %s", reservation_id, reason)
    return "failed"


def _delete(session: Session, config: Config, gateway: CalendarGateway, reservation: Reservation) -> str:
    if not (reservation.google_calendar_id and reservation.google_event_id):
        return "nothing in Google"
    event_id = reservation.google_event_id
    gateway.delete_event(reservation.google_calendar_id, event_id, send_updates=_send_updates(config))
    _record(session, reservation, announce_anyway=_tell_people(config, reservation), google_calendar_id=None)
    return "deleted"


def _room_declines(reservation: Reservation) -> bool:
    """A booking made in Google that the room must decline: released for a no-show, or ended early here."""
    return reservation.status == ReservationStatus.RELEASED or (
        reservation.ended_early_at is not None and reservation.status != ReservationStatus.CANCELLED)


def _decline_comment(reservation: Reservation) -> str | None:
    """The room's note to the organiser with its decline (none for a no-show: the release mail says it)."""
    if reservation.release_reason == ReleaseReason.SERIES_ENDED:
        return f"The room declines the rest of this series: {reservation.status_reason}."
    if reservation.status == ReservationStatus.RELEASED or reservation.ended_early_at is None:
        return None
    ended = reservation.ended_early_at.astimezone(reservation.room.zone)
    return f"Ended early at {ended:%H:%M}: the room is free again."


def _decline_as_room(session: Session, gateway: CalendarGateway, reservation: Reservation,
                     comment: str | None = None) -> str:
    """A released or ended-early booking made in Google: the room declines it on its own copy, never deletes it.

    Only the room's attendee entry changes (Google refuses other changes from an attendee's
    copy, and propagates the answer to the organiser); every other attendee is sent back as is.
    The comment is the room's answer's note to the organiser.
    """
    if reservation.room_response == "declined":
        return "already declined"
    calendar_id = reservation.room.calendar_id
    try:
        event = gateway.get_event(calendar_id, reservation.google_event_id)
    except EventNotFound:
        return "gone from Google"
    attendees = event.get("attendees") or []
    room_entry = [a for a in attendees if (a.get("email") or "").lower() == calendar_id.lower() or a.get("self")]
    if not room_entry:
        return "no room attendee to decline"  # written straight on the room calendar: nothing to answer
    answer = {"responseStatus": "declined", **({"comment": comment} if comment else {})}
    declined = [dict(a, **answer) if a in room_entry else a for a in attendees]
    event = gateway.patch_event(calendar_id, reservation.google_event_id, {"attendees": declined},
                                send_updates="all")
    _record(session, reservation, room_response="declined", google_etag=event.get("etag"),
            google_updated_at=_parse_rfc3339(event.get("updated")))
    return "declined"


def _write(session: Session, config: Config, gateway: CalendarGateway, reservation: Reservation) -> str:
    room = reservation.room
    calendar_id = room.calendar_id
    send_updates = _send_updates(config)
    # Delegated mode: Google tells people of a new event, a new time, room or attendees, and not
    # of a new title or description (as calendar clients do). Room mode: the mail job compares
    # with what people were sent (roombridge/invitations.py), so it is told after every write.
    tell_people = reservation.invitation_due
    done = []
    if reservation.google_calendar_id and reservation.google_calendar_id != calendar_id:
        # Moved to another room: its calendar gets a new event, the old room's is deleted.
        old_calendar, old_event = reservation.google_calendar_id, reservation.google_event_id
        try:
            gateway.delete_event(old_calendar, old_event, send_updates=send_updates)
        except PermanentGoogleError as error:
            log.warning("reservation %s: could not delete the event on %s: %s", reservation.id, old_calendar, error)
        # People are sent the old room's event's CANCEL even if the insert below fails.
        _record(session, reservation, announce_anyway=_tell_people(config, reservation), google_calendar_id=None,
                google_event_id=None, google_revision=reservation.google_revision + 1)
        done.append("moved")

    body = event_body(reservation, config)
    revision = reservation.google_revision
    if reservation.google_calendar_id is None:
        event, revision = _insert(gateway, calendar_id, reservation.id, revision, body, send_updates)
        done.append("inserted")
    else:
        try:
            event = gateway.patch_event(calendar_id, reservation.google_event_id, body,
                                        send_updates=send_updates if tell_people else "none")
            done.append("patched")
        except EventNotFound:
            # Deleted in Google behind our back; the id cannot be used again.
            event, revision = _insert(gateway, calendar_id, reservation.id, revision + 1, body, send_updates)
            done.append("re-inserted")

    _record(
        session,
        reservation,
        # Invited once Google holds the booking as it stands; an edit meanwhile publishes (and invites) again.
        announce_if_whole=_tell_people(config, reservation),
        google_event_id=event["id"],
        google_calendar_id=calendar_id,
        google_revision=revision,
        google_etag=event.get("etag"),
        google_updated_at=_parse_rfc3339(event.get("updated")),
        status=ReservationStatus.CONFIRMED,
        status_reason=None,
        invitation_due=False,
    )
    return " and ".join(done)


def _tell_people(config: Config, reservation: Reservation) -> tuple[InvitationDue, ...]:
    """Room mode: the mail job sends what people's calendars now lack (nothing, if nothing they see changed)."""
    return () if config.delegated_mode else (InvitationDue(reservation.id),)


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


def _record(session: Session, reservation: Reservation, *, announce_if_whole=(), announce_anyway=(),
            **changes) -> bool:
    """Write what Google now holds, in a short write unit; True if all of it (status included) was stored.

    The unit that read the reservation held no lock while Google was called; this one takes
    it now. If an edit changed the row meanwhile (the version column says so), only where
    the event lives is kept: the edit announced another publish, which brings Google up to
    date from there. `announce_if_whole` is announced only when everything was stored.
    """
    reservation_id = reservation.id
    try:
        with unit_of_work(session):
            for name, value in changes.items():
                setattr(reservation, name, value)
            for event in (*announce_if_whole, *announce_anyway):
                announce(session, event)
        return True
    except StaleDataError:
        with unit_of_work(session):
            facts = {name: value for name, value in changes.items() if name in GOOGLE_FACTS}
            session.execute(sa.update(Reservation).where(Reservation.id == reservation_id).values(**facts))
            for event in announce_anyway:
                announce(session, event)
        return False


def stale_reservation_ids(session: Session, now: datetime, limit: int = 1000) -> list[int]:
    """Reservations whose Google write should have happened by now, oldest id first."""
    stale = now - STALE_AFTER
    ours = Reservation.source != ReservationSource.GOOGLE
    return list(session.scalars(
        sa.select(Reservation.id).where(
            Reservation.updated_at < stale,
            sa.or_(
                sa.and_(ours, Reservation.status == ReservationStatus.PENDING),
                # cancelled or released here but the event still stands in Google
                sa.and_(ours, Reservation.status.in_([ReservationStatus.CANCELLED, ReservationStatus.RELEASED]),
                        Reservation.google_calendar_id.is_not(None),
                        Reservation.google_delete_failed.is_(False)),
                # a booking made in Google, released or ended early here, that the room has not declined yet
                sa.and_(~ours, sa.or_(Reservation.status == ReservationStatus.RELEASED,
                                      sa.and_(Reservation.ended_early_at.is_not(None),
                                              Reservation.status != ReservationStatus.CANCELLED)),
                        Reservation.google_delete_failed.is_(False),
                        sa.func.coalesce(Reservation.room_response, "") != "declined"),
            ),
        ).order_by(Reservation.id).limit(limit)
    ))

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
    instance_id_for,
    own_properties,
    series_event_id_for,
    signing_key,
)
from roombridge.models import (
    ReleaseReason,
    Reservation,
    ReservationSeries,
    ReservationSource,
    ReservationStatus,
    audit,
)
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
        series = series_of(session, reservation)
    try:
        if reservation.source == ReservationSource.GOOGLE:
            return _decline_as_room(session, gateway, reservation, _decline_comment(reservation))
        if series is not None:
            return _publish_occurrence(session, config, gateway, reservation_id, series.id)
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


# --- series: one recurring event ------------------------------------------------------------------


def series_of(session: Session, reservation: Reservation) -> ReservationSeries | None:
    """The recurring event an occurrence is an instance of; None for a single booking, a series
    booked before series were one event (its occurrences stay separate events), or an occurrence
    moved to another room (an instance cannot leave its calendar: it becomes an event of its own)."""
    if not reservation.series_id or reservation.occurrence_start_at is None:
        return None
    series = session.get(ReservationSeries, reservation.series_id, populate_existing=True)
    if series is None or not series.holds(reservation):
        return None
    _ = series.room
    return series


def exdate_lines(series: ReservationSeries, occurrences: list[Reservation]) -> list[str]:
    """EXDATE lines (wall time in the room's zone, as Google writes them) for the left-out occurrences
    (`ReservationSeries.left_out`: the same set the room-mode invitation lists)."""
    zone = series.room.zone
    return [f"EXDATE;TZID={zone.key}:{moment.astimezone(zone):%Y%m%dT%H%M%S}"
            for moment in series.left_out(occurrences)]


def series_body(series: ReservationSeries, config: Config, anchor_id: int, occurrences: list[Reservation]) -> dict:
    """The recurring Google event of a series: its rule and exclusions, in the room's zone (Google wants
    `timeZone` on a recurring event's start and end, and expands the rule in that zone's wall time)."""
    room = series.room
    zone = room.zone
    body: dict = {
        "summary": series.title,
        "description": event_description(series, delegated=config.delegated_mode),  # type: ignore[arg-type]
        "location": room.name,
        "start": {"dateTime": series.start_at.astimezone(zone).isoformat(), "timeZone": str(zone)},
        "end": {"dateTime": series.end_at.astimezone(zone).isoformat(), "timeZone": str(zone)},
        "recurrence": [series.rule, *exdate_lines(series, occurrences)],
        "extendedProperties": {"private": own_properties(anchor_id, signing_key())},
    }
    if config.delegated_mode:
        body["attendees"] = [{"email": a} for a in [series.organiser_email, *(series.attendees or [])]]
    return body


def follows_series(reservation: Reservation, series: ReservationSeries) -> bool:
    """Whether the occurrence is its instance as the rule makes it (no exception needed)."""
    return (
        reservation.start_at == reservation.occurrence_start_at
        and reservation.end_at - reservation.start_at == series.duration
        and (reservation.title, reservation.description or "", list(reservation.attendees or []))
        == (series.title, series.description or "", list(series.attendees or []))
    )


def _publish_occurrence(session: Session, config: Config, gateway: CalendarGateway, reservation_id: int,
                        series_id: str) -> str:
    """One occurrence: the series' event written first if due, then its instance recorded, patched
    (an exception) or deleted (a cancelled instance). Never a new event."""
    done = []
    with unit_of_work(session, write=False):
        series = session.get(ReservationSeries, series_id, populate_existing=True)
        write_due = series.write_due
    if write_due:
        done.append(_write_series(session, config, gateway, series_id))
    with unit_of_work(session, write=False):
        series = session.get(ReservationSeries, series_id, populate_existing=True)
        reservation = session.get(Reservation, reservation_id, populate_existing=True)
        _ = series.room
        master, calendar_id = series.google_event_id, series.google_calendar_id
        status = reservation.status
    ended = status in (ReservationStatus.CANCELLED, ReservationStatus.RELEASED)
    if master is None or calendar_id is None:
        if ended and reservation.google_calendar_id is not None:
            _record(session, reservation, google_calendar_id=None)  # gone with the whole event
        return " and ".join(done) or "nothing in Google"
    instance = instance_id_for(master, reservation.occurrence_start_at)
    send_updates = _send_updates(config)
    if ended:
        # A cancelled instance: Google keeps it as a cancelled exception of the series.
        existed = gateway.delete_event(calendar_id, instance, send_updates=send_updates)
        _record(session, reservation, announce_anyway=_tell_people(config, reservation), google_calendar_id=None)
        return " and ".join([*done, "instance cancelled" if existed else "nothing in Google"])
    if status != ReservationStatus.PENDING:
        return " and ".join([*done, f"nothing to do ({status})"])
    tell_people = reservation.invitation_due
    marks = {"google_etag": series.google_etag, "google_updated_at": series.google_updated_at}
    if reservation.instance_exception or not follows_series(reservation, series):
        # An exception: Google stores the patched instance as an event of its own with the instance's id.
        zone = series.room.zone
        body = {
            "summary": reservation.title,
            "description": event_description(reservation, delegated=config.delegated_mode),
            "start": {"dateTime": reservation.start_at.astimezone(zone).isoformat(), "timeZone": str(zone)},
            "end": {"dateTime": reservation.end_at.astimezone(zone).isoformat(), "timeZone": str(zone)},
        }
        if config.delegated_mode:
            body["attendees"] = event_body(reservation, config)["attendees"]
        event = gateway.patch_event(calendar_id, instance, body, send_updates=send_updates if tell_people else "none")
        marks = {"google_etag": event.get("etag"), "google_updated_at": _parse_rfc3339(event.get("updated"))}
        marks["instance_exception"] = True
        done.append("instance patched")
    else:
        done.append("instance recorded")
    _record(
        session,
        reservation,
        announce_if_whole=_tell_people(config, reservation),
        google_event_id=instance,
        google_calendar_id=calendar_id,
        google_recurring_event_id=master,
        status=ReservationStatus.CONFIRMED,
        status_reason=None,
        invitation_due=False,
        **marks,
    )
    return " and ".join(done)


def _write_series(session: Session, config: Config, gateway: CalendarGateway, series_id: str) -> str:
    """Make the series' recurring event match the series row: insert, patch, move or delete it."""
    with unit_of_work(session, write=False):
        series = session.get(ReservationSeries, series_id, populate_existing=True)
        _ = series.room
        occurrences = list(session.scalars(sa.select(Reservation).where(Reservation.series_id == series_id)
                                           .order_by(Reservation.id)))
        anchor_id = occurrences[0].id if occurrences else 0
        # Every other occurrence is left out of the rule (`ReservationSeries.left_out`).
        live = [r for r in occurrences if series.keeps(r)]
        version = series.version
    calendar_id = series.room.calendar_id
    send_updates = _send_updates(config)
    tell_people = series.invitation_due
    done = []
    old_calendar, old_event = series.google_calendar_id, series.google_event_id
    if old_calendar and (not live or old_calendar != calendar_id):
        try:
            gateway.delete_event(old_calendar, old_event, send_updates=send_updates)
        except PermanentGoogleError as error:
            if live:  # moved: the new room's event is what matters; the old one is the sync's to see
                log.warning("series %s: could not delete the event on %s: %s", series_id, old_calendar, error)
            else:
                raise
        # People are sent the old event's CANCEL even if the insert below fails.
        _record_series(session, series_id, version, tell=_tell_series(config, anchor_id), tell_anyway=True,
                       google_calendar_id=None,
                       google_revision=series.google_revision + (1 if live else 0), **({} if live else {
                           "write_due": False, "invitation_due": False}))
        done.append("series deleted" if not live else "series moved")
        if not live:
            return done[0]
        with unit_of_work(session, write=False):
            series = session.get(ReservationSeries, series_id, populate_existing=True)
            _ = series.room
            version = series.version
    if not live:
        _record_series(session, series_id, version, write_due=False, invitation_due=False)
        return "nothing in Google"
    body = series_body(series, config, anchor_id, occurrences)
    event, revision, what = _put(gateway, calendar_id, series_id, series.google_revision, body, send_updates,
                                 existing=series.google_event_id if series.google_calendar_id else None,
                                 tell=tell_people, event_id=series_event_id_for)
    done.append(f"series {what}")
    _record_series(session, series_id, version, tell=_tell_series(config, anchor_id), google_event_id=event["id"],
                   google_calendar_id=calendar_id, google_revision=revision, google_etag=event.get("etag"),
                   google_updated_at=_parse_rfc3339(event.get("updated")), write_due=False, invitation_due=False)
    return " and ".join(done)


def _tell_series(config: Config, anchor_id: int) -> tuple[InvitationDue, ...]:
    """Room mode: the mail job of any occurrence mails the series too (roombridge/invitations.py)."""
    return () if config.delegated_mode or not anchor_id else (InvitationDue(anchor_id),)


def _record_series(session: Session, series_id: str, version: int, *, tell=(), tell_anyway: bool = False,
                   **changes) -> None:
    """Store what Google now holds of a series. If the series changed since it was read (an edit, or
    another occurrence's job that wrote it at the same time), only where its event lives is kept and
    nobody is told: the other write tells them. An event deleted (`tell_anyway`) is told anyway."""
    with unit_of_work(session):
        series = session.get(ReservationSeries, series_id, populate_existing=True)
        whole = series.version == version
        if not whole:
            changes = {k: v for k, v in changes.items() if k in GOOGLE_FACTS}
        for name, value in changes.items():
            setattr(series, name, value)
        for event in tell:
            if whole or tell_anyway:
                announce(session, event)


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
    event, revision, what = _put(gateway, calendar_id, reservation.id, reservation.google_revision, body,
                                 send_updates, existing=reservation.google_event_id if reservation.google_calendar_id
                                 else None, tell=tell_people)
    done.append(what)

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


def _put(gateway: CalendarGateway, calendar_id: str, owner: int | str, revision: int, body: dict, send_updates: str,
         *, existing: str | None, tell: bool, event_id=event_id_for) -> tuple[dict, int, str]:
    """Insert the event (`existing`: None) or patch it (sending updates only if people are to be `tell`ed);
    returns it, its revision and what was done."""
    if existing is None:
        event, revision = _insert(gateway, calendar_id, owner, revision, body, send_updates, event_id)
        return event, revision, "inserted"
    try:
        return (gateway.patch_event(calendar_id, existing, body, send_updates=send_updates if tell else "none"),
                revision, "patched")
    except EventNotFound:
        # Deleted in Google behind our back; the id cannot be used again.
        event, revision = _insert(gateway, calendar_id, owner, revision + 1, body, send_updates, event_id)
        return event, revision, "re-inserted"


def _insert(gateway: CalendarGateway, calendar_id: str, reservation_id: int | str, revision: int, body: dict,
            send_updates: str, event_id=event_id_for) -> tuple[dict, int]:
    """Insert under the deterministic id of (`reservation_id` or a series' id, revision); a taken id
    (deleted, or someone else's) moves on to the next revision."""
    for _ in range(3):
        try:
            event = gateway.insert_event(calendar_id, event_id(reservation_id, revision), body,
                                         send_updates=send_updates)
            return event, revision
        except EventIdTaken:
            revision += 1
    raise PermanentGoogleError("no free event id after three revisions", reason="duplicate")


GOOGLE_FACTS = ("google_event_id", "google_calendar_id", "google_revision", "google_etag", "google_updated_at",
                "google_recurring_event_id", "instance_exception")


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

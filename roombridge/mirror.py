"""Mirroring rules: what one Google event on a room calendar means for our reservations.

Pure: `read_event` turns Google's event dict into `GoogleEvent`; `decide` takes that event,
the reservation already mirroring it (if any) and the live reservations its time overlaps,
and returns the `Change` to apply. No session, no HTTP; the sync engine (roombridge/sync.py)
looks things up and applies the change.

Rules, decided on purpose:

- An event someone made in Google is a booking, `source=google`, unless the room declined
  it. A room response of `needsAction` or `tentative`, or no room attendee at all (written
  straight onto the room calendar), still counts as booked: the event is on the room's
  calendar and Google shows the room busy for it. A declined event is not a booking; if it
  was mirrored before, the mirror is cancelled.
- `cancelled` cancels the mirror. A cancelled event we never mirrored changes nothing.
- All-day events cover whole days in the room's time zone (`all_day=True`).
- Recurring series arrive as instances (singleEvents=true): one reservation per instance,
  `series_id` and `google_recurring_event_id` carrying the series' event id. An instance of a
  series booked here is its occurrence's, found by the instance id stored on it (the instances
  all carry the series' private property, so it never says which occurrence one is).
- A Google booking that overlaps a live reservation is kept with status CONFLICT and
  `conflict_with_id`, for admins; it never overwrites the reservation it clashes with.
- Our own events (found by the event id we stored, or by the private extended properties
  carrying our reservation id and its HMAC under SECRET_KEY; never by the shape of the event
  id, which anyone who may write to the room calendar chooses) are never imported twice. Echoes of our own writes (same
  etag, or not newer than what we stored) change nothing. A move, a resize, a retitle or a
  deletion made in Google is applied to the reservation and the organiser is told; moved
  onto another live reservation, ours becomes a CONFLICT rather than overwriting it. A
  reservation we cancelled ourselves is not revived by a stale copy of its event.
- A reservation released for a no-show (roombridge/checkin.py) stays released, whatever
  Google says about its event afterwards (the decline on the room's copy included). So does
  a booking made in Google and ended early here: the room declined the rest of it (the only
  change Google allows on the room's copy), and its end stays the moment it ended.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from roombridge.gcal import reservation_id_of
from roombridge.models import Reservation, ReservationSource, ReservationStatus
from roombridge.publish import description_from_event
from roombridge.text import storable_tree

TITLE_MAX = 200
SERIES_ID_MAX = 64
NO_TITLE = "(no title)"


class Action(enum.StrEnum):
    NONE = "none"
    CREATE = "create"
    UPDATE = "update"
    CANCEL = "cancel"


@dataclass(frozen=True)
class GoogleEvent:
    """The parts of a Google event that matter for a reservation. Times are aware UTC."""

    event_id: str
    cancelled: bool
    etag: str | None = None
    updated: datetime | None = None
    title: str = NO_TITLE
    description: str = ""
    organiser_email: str = ""
    start_at: datetime | None = None
    end_at: datetime | None = None
    all_day: bool = False
    attendees: tuple[str, ...] = ()
    room_response: str | None = None  # None: no room attendee (written straight on the room calendar)
    recurring_event_id: str | None = None
    private: bool = False  # visibility private or confidential
    own_reservation_id: int | None = None  # from our private extended property

    @property
    def room_declined(self) -> bool:
        return self.room_response == "declined"

    @property
    def is_booking(self) -> bool:
        """Whether the event holds the room (see the module docstring)."""
        return (
            not self.cancelled
            and not self.room_declined
            and self.start_at is not None
            and self.end_at is not None
            and self.start_at < self.end_at
        )


@dataclass(frozen=True)
class Change:
    """What to do to the reservation mirroring an event; `fields` are attributes to set."""

    action: Action
    reason: str
    fields: dict[str, Any] = field(default_factory=dict)
    notify_organiser: bool = False  # a change made in Google to one of our reservations

    @property
    def is_noop(self) -> bool:
        return self.action is Action.NONE


def _parse_instant(raw: dict, room_zone: ZoneInfo) -> tuple[datetime, bool]:
    if raw.get("date"):
        day = date.fromisoformat(raw["date"])
        zone = ZoneInfo(raw["timeZone"]) if raw.get("timeZone") else room_zone
        return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC), True
    moment = datetime.fromisoformat(raw["dateTime"].replace("Z", "+00:00"))
    if moment.tzinfo is None:
        zone = ZoneInfo(raw["timeZone"]) if raw.get("timeZone") else room_zone
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC), False


def _parse_updated(raw: str | None) -> datetime | None:
    if not raw:
        return None
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)


def read_event(event: dict, room_calendar_id: str, room_time_zone: str = "UTC",
               signing_key: str | None = None) -> GoogleEvent:
    """Read one item of events.list as seen on the room's calendar.

    Every string Google sent is made storable first (roombridge/text.py: no NUL, no lone
    surrogate), the one place where Google's text enters our rows. Our own events are told by
    the signature in their private properties, checked under `signing_key` (SECRET_KEY).
    """
    event = storable_tree(event)
    event_id = event["id"]
    common = dict(
        event_id=event_id,
        etag=event.get("etag"),
        updated=_parse_updated(event.get("updated")),
        recurring_event_id=event.get("recurringEventId"),
        own_reservation_id=reservation_id_of(event, signing_key),
    )
    if event.get("status") == "cancelled" or "start" not in event or "end" not in event:
        # Deleted events often come back as a stub: id and status only.
        return GoogleEvent(cancelled=True, **common)

    room_zone = ZoneInfo(room_time_zone or "UTC")
    start_at, all_day = _parse_instant(event["start"], room_zone)
    end_at, _ = _parse_instant(event["end"], room_zone)

    room_calendar_id = room_calendar_id.lower()
    organiser = (event.get("organizer") or {}).get("email", "").lower()
    if not organiser or organiser == room_calendar_id:
        # Written straight onto the room calendar: the room "organises" it; the person is the creator.
        organiser = (event.get("creator") or {}).get("email", "").lower() or room_calendar_id

    room_response = None
    attendees = []
    for attendee in event.get("attendees") or []:
        email = (attendee.get("email") or "").lower()
        if email == room_calendar_id or (attendee.get("resource") and attendee.get("self")):
            room_response = attendee.get("responseStatus") or "needsAction"
        elif not attendee.get("resource") and email and email != organiser:
            attendees.append(email)

    return GoogleEvent(
        cancelled=False,
        title=(event.get("summary") or "").strip()[:TITLE_MAX] or NO_TITLE,
        # Our own events carry a footer naming the people (room mode); it is not the description.
        description=description_from_event(event.get("description")),
        organiser_email=organiser,
        start_at=start_at,
        end_at=end_at,
        all_day=all_day,
        attendees=tuple(attendees),
        room_response=room_response,
        private=event.get("visibility") in ("private", "confidential"),
        **common,
    )


def _is_echo(event: GoogleEvent, current: Reservation) -> bool:
    """Google handing back something we have already seen (or written ourselves)."""
    if event.etag and current.google_etag == event.etag:
        return True
    return bool(event.updated and current.google_updated_at and event.updated <= current.google_updated_at)


def _google_marks(event: GoogleEvent) -> dict[str, Any]:
    return {"google_etag": event.etag, "google_updated_at": event.updated}


def _conflict_fields(clashes: Sequence[Reservation], current_status: ReservationStatus | None) -> dict[str, Any]:
    if clashes:
        first = min(clashes, key=lambda r: (r.start_at, r.id))
        return {
            "status": ReservationStatus.CONFLICT,
            "conflict_with_id": first.id,
            "status_reason": f"overlaps reservation {first.id}; kept for an admin to resolve",
        }
    if current_status in (None, ReservationStatus.CONFLICT, ReservationStatus.CANCELLED):
        return {"status": ReservationStatus.CONFIRMED, "conflict_with_id": None, "status_reason": None}
    return {}


def decide(event: GoogleEvent, current: Reservation | None, clashes: Sequence[Reservation] = ()) -> Change:
    """The change that makes `current` (the mirror of `event`, or None) agree with Google.

    `clashes` are the live reservations of the room overlapping the event's time, other than
    `current`; the caller looks them up only when `event.is_booking`.
    """
    own = current is not None and current.source != ReservationSource.GOOGLE
    if current is not None and current.status == ReservationStatus.RELEASED:
        # Released for a no-show: our event is deleted, or the room declines the Google booking.
        # Nothing Google says about it afterwards brings the booking back.
        return Change(Action.NONE, "released here")
    if current is not None and not own and current.ended_early_at is not None:
        # Ended early here: the room declined the rest; Google still holds the booked end.
        return Change(Action.NONE, "ended early here")
    if current is None and event.own_reservation_id is not None:
        # Ours by its private property, but the reservation is gone from this room: never import it.
        return Change(Action.NONE, "our own event without a matching reservation here")
    if own:
        return _decide_own(event, current, clashes)
    return _decide_google(event, current, clashes)


def _decide_google(event: GoogleEvent, current: Reservation | None, clashes: Sequence[Reservation]) -> Change:
    if current is None:
        if not event.is_booking:
            why = "declined by the room" if event.room_declined else "not a booking"
            return Change(Action.NONE, why)
        fields = {
            "source": ReservationSource.GOOGLE,
            "google_event_id": event.event_id,
            **_booking_fields(event),
            "google_recurring_event_id": event.recurring_event_id,
            "series_id": (event.recurring_event_id or "")[:SERIES_ID_MAX] or None,
            **_google_marks(event),
            **_conflict_fields(clashes, None),
        }
        return Change(Action.CREATE, "booked in Google", fields)

    if _is_echo(event, current):
        return Change(Action.NONE, "already mirrored")
    if not event.is_booking:
        if current.status == ReservationStatus.CANCELLED:
            return Change(Action.NONE, "already cancelled")
        why = "declined by the room in Google" if event.room_declined else "cancelled in Google"
        fields = {"status": ReservationStatus.CANCELLED, "status_reason": why, "conflict_with_id": None}
        if event.room_declined:
            fields["room_response"] = event.room_response
        return Change(Action.CANCEL, why, {**fields, **_google_marks(event)})

    fields = {**_booking_fields(event), **_google_marks(event), **_conflict_fields(clashes, current.status)}
    return Change(Action.UPDATE, "changed in Google", fields)


def _booking_fields(event: GoogleEvent) -> dict[str, Any]:
    """What a booking made in Google says about itself, as reservation fields."""
    return {
        "organiser_email": event.organiser_email,
        "title": event.title,
        "description": event.description,
        "start_at": event.start_at,
        "end_at": event.end_at,
        "all_day": event.all_day,
        "attendees": list(event.attendees),
        "room_response": event.room_response,
        "private": event.private,
    }


def _decide_own(event: GoogleEvent, current: Reservation, clashes: Sequence[Reservation]) -> Change:
    if current.status == ReservationStatus.CANCELLED:
        # We cancelled it; the push job deletes the event. A stale copy must not revive it.
        return Change(Action.NONE, "cancelled here")
    if _is_echo(event, current):
        return Change(Action.NONE, "echo of our own write")
    if event.cancelled:
        why = "deleted in Google"
        fields = {"status": ReservationStatus.CANCELLED, "status_reason": why, "conflict_with_id": None}
        return Change(Action.CANCEL, why, {**fields, **_google_marks(event)}, notify_organiser=True)
    if event.room_declined:
        # Delegated mode only: the room answered our invitation with "no".
        why = "declined by the room in Google"
        fields = {"status": ReservationStatus.FAILED, "status_reason": why, "room_response": event.room_response}
        return Change(Action.UPDATE, why, {**fields, **_google_marks(event)}, notify_organiser=True)

    changed = {
        name: value
        for name, value in (
            ("start_at", event.start_at),
            ("end_at", event.end_at),
            ("all_day", event.all_day),
            ("title", event.title),
            ("description", event.description),
        )
        if getattr(current, name) != value
    }
    if not changed:
        # Same content: typically our own write seen before the push job stored its etag.
        # Not touching the row keeps us from racing that job for the version column.
        return Change(Action.NONE, "no change to our reservation")
    moved = "start_at" in changed or "end_at" in changed
    status_fields: dict[str, Any] = {}
    if moved:
        if clashes:
            status_fields = _conflict_fields(clashes, current.status)
            status_fields["status_reason"] = f"moved in Google onto reservation {status_fields['conflict_with_id']}"
        elif current.status == ReservationStatus.CONFLICT:
            status_fields = {"status": ReservationStatus.CONFIRMED, "conflict_with_id": None, "status_reason": None}
    why = "moved in Google" if moved else "changed in Google"
    return Change(
        Action.UPDATE, why, {**changed, **status_fields, **_google_marks(event)}, notify_organiser=True
    )

"""Booking: who may reserve which room when, recurring series, edits and cancellations.

Plain domain code, called by the booking pages and the JSON API alike, testable without
HTTP. By concern:

- `rules`: the field and time rules (and their field-keyed errors) that the API schemas, the
  forms, the admin's room edits and the commands all share;
- `recurrence`: repeat rules (dateutil's rrule: daily, weekly, every N, monthly), at the same
  wall-clock time across DST;
- `commands`: book, edit, cancel (for a series occurrence: this, following or all of them),
  retry the Google write (each its own unit of work);
- `queries`: what an actor may see, lists, the day's timeline, the free-room finder and what it
  may offer (the same time rules as booking, next free, nearest free slots, other rooms that fit);
- `conflicts`: clash queries, the database's last word on a race, conflicts settling.

Callers read `booking.book(...)`: the public names are re-exported here.
"""

from roombridge.booking.commands import SCOPES, BookingRequest, BookingResult, book, cancel, edit, retry_write
from roombridge.booking.conflicts import Clash, Conflict, find_clashes, settle_conflicts
from roombridge.booking.queries import (
    PRIVATE_TITLE,
    Assessment,
    Busy,
    assess,
    can_change,
    can_see,
    day_timeline,
    find_free_rooms,
    get,
    list_reservations,
    may_see_details,
    organised_or_attended_by,
    refusals,
    rooms_that_fit,
    title_for,
)
from roombridge.booking.recurrence import FREQUENCIES, Recurrence, expand
from roombridge.booking.rules import (
    MAX_DESCRIPTION_LENGTH,
    MAX_TITLE_LENGTH,
    BookingError,
    InvalidBooking,
    NotAllowed,
    NotFound,
    Policy,
    clean_attendees,
    is_admin,
    normalise_email,
    parse_hours,
)

__all__ = [
    "Assessment", "assess", "refusals", "rooms_that_fit", "PRIVATE_TITLE", "may_see_details", "title_for",
    "FREQUENCIES", "SCOPES", "MAX_DESCRIPTION_LENGTH", "MAX_TITLE_LENGTH", "BookingError", "BookingRequest",
    "BookingResult", "Busy", "Clash", "Conflict", "InvalidBooking", "NotAllowed", "NotFound", "Policy", "Recurrence",
    "book", "can_change", "can_see", "cancel", "clean_attendees", "day_timeline", "edit", "expand", "find_clashes",
    "find_free_rooms", "get", "is_admin", "list_reservations", "normalise_email", "organised_or_attended_by",
    "parse_hours", "retry_write", "settle_conflicts",
]

"""Booking rules: the field and time rules every way in shares, with errors keyed by field.

The API schemas (webapp/schemas.py), the booking forms (webapp/forms.py), the admin's room
edits (roombridge/rooms.py) and the booking commands (commands.py) all check with these
functions, so a rule and its message live in one place. Errors collect as
``{field: [message, ...]}`` (`add_error`), which the pages show next to the field and the
API answers as its 422 body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.orm import Session

from roombridge.config import Config
from roombridge.models import Room

log = logging.getLogger(__name__)

MAX_TITLE_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 5000

# C0 and C1 controls, DEL, and Unicode's line and paragraph separators. In a title any of them
# would split a mail header or a calendar line (a title goes into the invitation's Subject);
# a description may hold line breaks and tabs, and nothing else of these.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
DESCRIPTION_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
NO_CONTROL_CHARACTERS = "Must not contain line breaks or other control characters."


class BookingError(Exception):
    """A booking that cannot be made as asked; the subclass says why."""


class InvalidBooking(BookingError):
    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))



class NotAllowed(BookingError):
    """The actor may see the reservation but not change it."""


class NotFound(BookingError):
    """No such reservation or room, or none the actor may see."""


def is_admin(config: Config, email: str) -> bool:
    return email.strip().lower() in config.ADMIN_EMAILS


def normalise_email(address: str) -> str:
    """A syntactically valid address, lower-cased so duplicates are found; ValueError if not."""
    try:
        checked = validate_email(address.strip(), check_deliverability=False)
    except (EmailNotValidError, AttributeError) as exc:
        raise ValueError(f"{address!r} is not a valid e-mail address") from exc
    return checked.normalized.lower()


def parse_hours(value: str) -> tuple[time, time | None]:
    """"HH:MM-HH:MM" -> (opens, closes); closes None means midnight at the end of the day (24:00)."""
    opens_text, _, closes_text = value.partition("-")
    opens = time.fromisoformat(opens_text.strip())
    closes_text = closes_text.strip()
    closes = None if closes_text in ("24:00", "00:00") else time.fromisoformat(closes_text)
    return opens, closes


@dataclass(frozen=True)
class Policy:
    bookable_hours: str
    max_duration: timedelta
    max_days_ahead: int
    min_notice: timedelta

    @classmethod
    def for_room(cls, room: Room, config: Config) -> Policy:
        def pick(own, default):
            return default if own is None else own

        return cls(
            bookable_hours=room.bookable_hours or config.BOOKABLE_HOURS,
            max_duration=timedelta(minutes=pick(room.max_duration_minutes, config.MAX_DURATION_MINUTES)),
            max_days_ahead=pick(room.max_days_ahead, config.MAX_DAYS_AHEAD),
            min_notice=timedelta(minutes=pick(room.min_notice_minutes, config.MIN_NOTICE_MINUTES)),
        )


def add_error(errors: dict[str, list[str]], name: str, message: str) -> None:
    messages = errors.setdefault(name, [])
    if message not in messages:
        messages.append(message)


def aware_instant(name: str, value: datetime, errors: dict[str, list[str]]) -> datetime | None:
    if not isinstance(value, datetime):
        add_error(errors, name, "Not a date and time.")
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        add_error(errors, name, "Give a time zone or offset (e.g. 2030-01-07T10:00:00Z).")
        return None
    return value.astimezone(UTC)


def check_times(
    room: Room,
    policy: Policy,
    start: datetime,
    end: datetime,
    now: datetime,
    errors: dict[str, list[str]],
    *,
    field_name: str = "start",
    check_notice: bool = True,
) -> None:
    """The time rules for one occurrence, in the room's zone; messages go under `field_name`."""
    zone = room.zone
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    when = f"{local_start:%Y-%m-%d %H:%M}"
    prefix = "" if field_name in ("start", "end") else f"The occurrence on {when}: "
    if end <= start:
        add_error(errors, "end" if field_name == "start" else field_name, prefix + END_AFTER_START)
        return
    if end - start > policy.max_duration:
        minutes = int(policy.max_duration.total_seconds() // 60)
        add_error(errors, "end" if field_name == "start" else field_name,
                  prefix + f"A booking of {room.name} may last at most {_duration_text(minutes)}.")
    if check_notice:
        if start < now + policy.min_notice:
            if policy.min_notice:
                minutes = int(policy.min_notice.total_seconds() // 60)
                add_error(errors, field_name,
                          prefix + f"{room.name} must be booked at least {_duration_text(minutes)} ahead.")
            else:
                add_error(errors, field_name, prefix + "The start is in the past.")
        if start > now + timedelta(days=policy.max_days_ahead):
            add_error(errors, field_name,
                      prefix + f"{room.name} can be booked at most {policy.max_days_ahead} days ahead.")
    opens, closes = parse_hours(policy.bookable_hours)
    last_moment = local_end - timedelta(microseconds=1)
    closes_at = (
        datetime.combine(local_start.date() + timedelta(days=1), time(0), zone)
        if closes is None
        else datetime.combine(local_start.date(), closes, zone)
    )
    within = (
        last_moment.date() == local_start.date()
        and local_start.timetz().replace(tzinfo=None) >= opens
        and local_end.replace(tzinfo=None) <= closes_at.replace(tzinfo=None)
    )
    if not within:
        add_error(errors, field_name,
                  prefix + f"{room.name} can be booked between {policy.bookable_hours} ({room.time_zone} time), "
                  "within one day.")


END_AFTER_START = "The end must be after the start."
REPEAT_END = "Give either a number of occurrences or an end date."


def check_span(start: datetime, end: datetime, errors: dict[str, list[str]], field_name: str = "end") -> bool:
    """The end after the start (pages, API schema, commands); False, with the message, if not."""
    if end <= start:
        add_error(errors, field_name, END_AFTER_START)
        return False
    return True


def check_repeat_end(count, until, errors: dict[str, list[str]], field_name: str = "recurrence") -> bool:
    """A series ends after a number of occurrences or on a date: exactly one of the two."""
    if (count is None) == (until is None):
        add_error(errors, field_name, REPEAT_END)
        return False
    return True


def _duration_text(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} h" if hours else f"{rest} min"


def clean_attendees(addresses: Iterable[str], errors: dict[str, list[str]], config: Config) -> list[str]:
    """Valid, lower-cased, de-duplicated addresses in the order given, of the attendee domains only.

    Invitations go to every attendee, so the list is what keeps the app from mailing the world:
    at most MAX_ATTENDEES, all within ATTENDEE_DOMAINS (default: ALLOWED_DOMAINS).
    """
    cleaned: list[str] = []
    if isinstance(addresses, str) or not isinstance(addresses, Iterable):
        add_error(errors, "attendees", "Give a list of e-mail addresses.")
        return cleaned
    addresses = list(addresses)
    if len(addresses) > 10 * config.MAX_ATTENDEES:  # far too many to be worth checking one by one
        add_error(errors, "attendees", f"At most {config.MAX_ATTENDEES} attendees.")
        return cleaned
    for address in addresses:
        if not isinstance(address, str):
            add_error(errors, "attendees", "Every attendee must be an e-mail address.")
            continue
        try:
            normalised = normalise_email(address)
        except ValueError as exc:
            add_error(errors, "attendees", str(exc) + ".")
            continue
        if normalised not in cleaned:
            cleaned.append(normalised)
    domains = config.attendee_domains
    outside = [a for a in cleaned if domains and a.rpartition("@")[2] not in domains]
    if outside:
        shown = ", ".join(outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else "")
        add_error(errors, "attendees", f"Only people of {', '.join(sorted(domains))} can be invited, not {shown}.")
    if len(cleaned) > config.MAX_ATTENDEES:
        add_error(errors, "attendees", f"At most {config.MAX_ATTENDEES} attendees.")
    return cleaned


def capacity_warning(room: Room, organiser: str, attendees: Sequence[str]) -> list[str]:
    people = len({organiser, *attendees})
    if room.capacity is not None and people > room.capacity:
        return [f"{people} people are invited but {room.name} seats {room.capacity}."]
    return []


def check_text(title: str, description: str, errors: dict[str, list[str]]) -> tuple[str, str]:
    """A booking's title (one line) and description (lines; CRLF and CR become LF), checked."""
    if not isinstance(title, str) or not title.strip():
        add_error(errors, "title", "Give the booking a title.")
        title = ""
    else:
        check_one_line(title, "title", errors)
        if len(title.strip()) > MAX_TITLE_LENGTH:
            add_error(errors, "title", f"At most {MAX_TITLE_LENGTH} characters.")
    if not isinstance(description, str):
        add_error(errors, "description", "Not a text.")
        description = ""
    else:
        description = description.replace("\r\n", "\n").replace("\r", "\n")
        if DESCRIPTION_CONTROL_CHARACTERS.search(description):
            add_error(errors, "description", "Must not contain control characters other than line breaks and tabs.")
        if len(description) > MAX_DESCRIPTION_LENGTH:
            add_error(errors, "description", f"At most {MAX_DESCRIPTION_LENGTH} characters.")
    return title.strip(), description


def check_one_line(text: str, field_name: str, errors: dict[str, list[str]]) -> bool:
    """No line break or other control character in `text` (titles, names); False, with the message, if any."""
    if CONTROL_CHARACTERS.search(text):
        add_error(errors, field_name, NO_CONTROL_CHARACTERS)
        return False
    return True


def one_line(text: str) -> str:
    """`text` with every control character and line separator made a space: for text from outside
    (a Google event's title) on its way into a mail header."""
    return " ".join(CONTROL_CHARACTERS.sub(" ", text).split())


def bookable_room(session: Session, room_id: int, errors: dict[str, list[str]]) -> Room | None:
    room = session.get(Room, room_id) if isinstance(room_id, int) and not isinstance(room_id, bool) else None
    if room is None:
        add_error(errors, "room_id", "No such room.")
        return None
    if not room.in_scope:
        add_error(errors, "room_id", f"{room.name} is not bookable here.")
        return None
    return room


# --- a room's own fields (the admin's add and edit, console and CLI) ---------------------------

ROOM_FIELDS = ("name", "capacity", "building", "floor", "features", "time_zone", "bookable_hours",
               "max_duration_minutes", "max_days_ahead", "min_notice_minutes")
ROOM_NUMBERS = ("capacity", "max_duration_minutes", "max_days_ahead", "min_notice_minutes")
HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")
# Far past any real room or policy, and inside every database's integer column.
LARGEST_NUMBER = 1_000_000


def parse_features(raw: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if raw is None:
        return []
    items = raw.split(",") if isinstance(raw, str) else raw
    seen: list[str] = []
    for item in (i.strip() for i in items):
        if item and item not in seen:
            seen.append(item)
    return seen


def check_room_fields(changes: dict) -> tuple[dict, dict[str, list[str]]]:
    """Room fields checked and normalised: (clean values, errors by field), in ROOM_FIELDS order."""
    clean: dict = {}
    errors: dict[str, list[str]] = {}
    unknown = set(changes) - set(ROOM_FIELDS)
    if unknown:
        add_error(errors, "form", f"cannot change {', '.join(sorted(unknown))}")
    for name in ROOM_FIELDS:
        if name in changes:
            try:
                clean[name] = _room_field(name, changes[name])
            except ValueError as problem:
                add_error(errors, name, str(problem))
    return clean, errors


def _room_field(name: str, value):
    if name == "name":
        value = (value or "").strip()
        if not value:
            raise ValueError("A room needs a name.")
        if CONTROL_CHARACTERS.search(value):
            raise ValueError(NO_CONTROL_CHARACTERS)
        if len(value) > 200:
            raise ValueError("The name is longer than 200 characters.")
        return value
    if name in ROOM_NUMBERS:
        if value in ("", None):
            return None
        label = name.replace("_", " ").capitalize()
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{label} must be a whole number.") from None
        if number < (1 if name != "min_notice_minutes" else 0):
            raise ValueError(f"{label} is too small.")
        if number > LARGEST_NUMBER:
            raise ValueError(f"{label} is too large.")
        return number
    if name in ("building", "floor"):
        return (value or "").strip() or None
    if name == "features":
        return parse_features(value)
    if name == "time_zone":
        value = (value or "").strip() or "UTC"
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
            raise ValueError(f"Unknown time zone {value!r} (use an IANA name such as Europe/London).") from None
        return value
    if name == "bookable_hours":
        if not value:
            return None
        if not HOURS.match(value.strip()):
            raise ValueError("Bookable hours look like 08:00-18:00.")
        return value.strip()
    raise AssertionError(name)

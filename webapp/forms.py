"""What the booking pages' forms mean: text fields in, typed values and per-field messages out.

The pages take dates and times as a person types them, in the room's own time zone; the
booking domain takes instants. This module turns one into the other and says, field by
field, what is wrong, so the page can show each message next to its field and keep what the
person typed. Rules about rooms and times themselves stay in roombridge.booking; its error
keys are mapped onto the form's fields here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from roombridge import booking
from roombridge.booking import rules
from roombridge.models import Reservation, Room

REPEAT_CHOICES = (("none", "Does not repeat"), ("daily", "Every day"), ("weekly", "Every week"),
                  ("monthly", "Every month"))
MONTHLY_CHOICES = (("date", "On the same date"), ("weekday", "On the same weekday (e.g. the 2nd Tuesday)"))
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# booking's error keys -> the form field each message is shown beside.
DOMAIN_FIELDS = {
    "room_id": "room_id",
    "title": "title",
    "description": "description",
    "attendees": "attendees",
    "start": "start",
    "end": "end",
    "recurrence": "repeat",
    "status": "form",
    "organiser_email": "form",
}

BOOKING_FIELDS = ("room_id", "title", "date", "start", "end", "attendees", "description",
                  "repeat", "repeat_count", "repeat_until", "repeat_interval", "repeat_monthly")


@dataclass
class BookingForm:
    """The typed-in values (strings, kept for redisplay) and the messages per field."""

    values: dict[str, str]
    weekdays: list[str] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add_error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def add_domain_errors(self, errors: dict[str, list[str]]) -> None:
        for key, messages in errors.items():
            for message in messages:
                self.add_error(DOMAIN_FIELDS.get(key, "form"), message)

    def add_conflict(self, conflict: booking.Conflict, zone: ZoneInfo) -> None:
        for clash in conflict.clashes[:5]:
            start, end = clash.start.astimezone(zone), clash.end.astimezone(zone)
            self.add_error("start", f"The room is already booked {start:%a %d %b %H:%M}–{end:%H:%M} "
                                    f"(“{clash.title}”). Choose another time or room.")
        if len(conflict.clashes) > 5:
            self.add_error("start", f"…and {len(conflict.clashes) - 5} more clashes.")

    @classmethod
    def from_mapping(cls, data, *, with_repeat: bool = True) -> BookingForm:
        values = {name: (data.get(name) or "").strip() for name in BOOKING_FIELDS}
        if not values["repeat"]:
            values["repeat"] = "none"
        if not with_repeat:
            values["repeat"] = "none"
        weekdays = [d for d in data.getlist("weekdays")] if hasattr(data, "getlist") else []
        return cls(values=values, weekdays=weekdays)

    @classmethod
    def for_reservation(cls, reservation: Reservation, zone: ZoneInfo) -> BookingForm:
        start, end = reservation.start_at.astimezone(zone), reservation.end_at.astimezone(zone)
        return cls(values={
            "room_id": str(reservation.room_id),
            "title": reservation.title,
            "date": start.date().isoformat(),
            "start": f"{start:%H:%M}",
            "end": f"{end:%H:%M}",
            "attendees": ", ".join(reservation.attendees or []),
            "description": reservation.description or "",
            "repeat": "none", "repeat_count": "", "repeat_until": "",
        })

    # --- parsing --------------------------------------------------------------------------------

    def require_title(self) -> None:
        # Checked here as well as in the domain, so that every message shows at once.
        if not self.values["title"]:
            self.add_error("title", "Enter a title.")

    def room(self, rooms: dict[int, Room]) -> Room | None:
        try:
            room = rooms.get(int(self.values["room_id"]))
        except ValueError:
            room = None
        if room is None:
            self.add_error("room_id", "Choose a room.")
        return room

    def when(self, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
        """Start and end as aware datetimes in `zone`, or None with messages added."""
        day = parse_date(self.values["date"])
        if day is None:
            self.add_error("date", "Enter a date as YYYY-MM-DD." if self.values["date"] else "Enter a date.")
        start_time = parse_time(self.values["start"])
        if start_time is None:
            self.add_error("start", "Enter a start time as HH:MM." if self.values["start"] else "Enter a start time.")
        end_time = parse_time(self.values["end"])
        if end_time is None:
            self.add_error("end", "Enter an end time as HH:MM." if self.values["end"] else "Enter an end time.")
        if day is None or start_time is None or end_time is None:
            return None
        start = datetime.combine(day, start_time, zone)
        end = datetime.combine(day, end_time, zone)
        span_errors: dict[str, list[str]] = {}
        if not rules.check_span(start, end, span_errors):
            self.add_domain_errors(span_errors)
            return None
        return start, end

    def attendee_list(self) -> list[str]:
        text = self.values["attendees"].replace(";", ",").replace("\n", ",")
        return [part.strip() for part in text.split(",") if part.strip()]

    def recurrence(self) -> booking.Recurrence | None:
        repeat = self.values["repeat"]
        if repeat == "none":
            return None
        if repeat not in ("daily", "weekly", "monthly"):
            self.add_error("repeat", "Choose how the booking repeats.")
            return None
        count = until = None
        if self.values["repeat_count"]:
            try:
                count = int(self.values["repeat_count"])
            except ValueError:
                self.add_error("repeat_count", "Enter a whole number of occurrences.")
        if self.values["repeat_until"]:
            until = parse_date(self.values["repeat_until"])
            if until is None:
                self.add_error("repeat_until", "Enter the last date as YYYY-MM-DD.")
        if count is None and until is None and "repeat_count" not in self.errors and "repeat_until" not in self.errors:
            self.add_error("repeat_count", "Give a number of occurrences or a last date.")
        interval = 1
        if self.values["repeat_interval"]:
            try:
                interval = int(self.values["repeat_interval"])
            except ValueError:
                self.add_error("repeat_interval", "Enter a whole number.")
        monthly = self.values["repeat_monthly"] or "date"
        weekdays = []
        for value in self.weekdays:
            if value.isdigit() and 0 <= int(value) <= 6:
                weekdays.append(int(value))
        if self.errors.get("repeat_count") or self.errors.get("repeat_until") or self.errors.get("repeat_interval"):
            return None
        return booking.Recurrence(frequency=repeat, weekdays=weekdays, count=count, until=until,
                                  interval=interval, monthly=monthly)


# Dates a person could mean; beyond them, day arithmetic would leave the calendar.
EARLIEST_DATE, LATEST_DATE = date(1970, 1, 1), date(9998, 12, 31)


def parse_date(text: str) -> date | None:
    try:
        parsed = date.fromisoformat(text)
    except ValueError:
        return None
    return parsed if EARLIEST_DATE <= parsed <= LATEST_DATE else None


def parse_time(text: str) -> time | None:
    try:
        parsed = time.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class FinderQuery:
    """The room finder's question; defaults ask for the next hour that starts on the hour."""

    day: date
    start: time
    end: time
    people: int | None
    features: tuple[str, ...]
    building: str
    floor: str
    errors: dict[str, str]

    @classmethod
    def from_args(cls, args, now_local: datetime) -> FinderQuery:
        errors: dict[str, str] = {}
        default_start = (now_local + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
        if default_start.hour >= 19 or default_start.date() != now_local.date():
            default_start = datetime.combine(now_local.date() + timedelta(days=1), time(9, 0))
        day = parse_date(args.get("date", "")) if args.get("date") else default_start.date()
        if day is None:
            errors["date"] = "Enter a date as YYYY-MM-DD."
            day = default_start.date()
        start = parse_time(args.get("start", "")) if args.get("start") else default_start.time()
        if start is None:
            errors["start"] = "Enter a start time as HH:MM."
            start = default_start.time()
        default_end = (datetime.combine(day, start) + timedelta(hours=1)).time()
        end = parse_time(args.get("end", "")) if args.get("end") else default_end
        if end is None:
            errors["end"] = "Enter an end time as HH:MM."
            end = default_end
        if "end" not in errors and end <= start:
            errors["end"] = rules.END_AFTER_START
        people = None
        if args.get("people"):
            try:
                people = int(args["people"])
                if not 1 <= people <= 100_000:
                    raise ValueError
            except ValueError:
                errors["people"] = "Enter a number of people, 1 or more."
                people = None
        features = tuple(sorted({f.strip().lower() for f in args.getlist("features") if f.strip()}))
        return cls(day=day, start=start, end=end, people=people, features=features,
                   building=args.get("building", "").strip(), floor=args.get("floor", "").strip(), errors=errors)

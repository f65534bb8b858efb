"""Time handling: the controllable clock, RFC 3339, event times and RRULE expansion.

Google behaviours followed (Calendar API v3 reference, "Events" resource):
- ``start``/``end`` hold either ``date`` (all-day, yyyy-mm-dd) or ``dateTime`` (RFC 3339);
  a ``dateTime`` without offset needs ``timeZone``; both must be of the same kind, else 400
  "Start and end times must either both be date or both be dateTime."; an end before the
  start is 400 ``timeRangeEmpty``.
- ``updated``/``created`` are RFC 3339 in UTC with milliseconds (``2025-03-22T19:14:43.123Z``).
- Recurring series are expanded in the event's own time zone (wall-clock, so 09:00 stays
  09:00 across a DST change); instance ids are ``<id>_<YYYYMMDDTHHMMSSZ>`` (UTC start) or
  ``<id>_<YYYYMMDD>`` for all-day series, as Google names them.
"""

import threading
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rruleset, rrulestr

from .errors import ApiError, invalid, required

# Without a timeMax, instances of a series are generated up to this far past its start (or
# the emulated "now", if later), and never more than MAX_INSTANCES of them, because an
# open-ended RRULE has no natural end.
EXPANSION_HORIZON = timedelta(days=366)
MAX_INSTANCES = 1000


class Clock:
    """Real time plus an offset that tests advance to simulate hours in seconds."""

    def __init__(self):
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self):
        with self._lock:
            offset = self._offset
        return datetime.fromtimestamp(time.time() + offset, UTC)

    def advance(self, seconds):
        with self._lock:
            self._offset += float(seconds)

    @property
    def offset(self):
        with self._lock:
            return self._offset

    def reset(self):
        with self._lock:
            self._offset = 0.0


def format_rfc3339(moment):
    """UTC with milliseconds and Z, as Google writes ``updated`` and ``created``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(value, location=None):
    """Parse an RFC 3339 timestamp with a mandatory offset (as query params require)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError):
        raise invalid(f"Invalid value for: {value}", location) from None
    if parsed.tzinfo is None:
        raise invalid(f"Invalid value for: {value}", location)
    return parsed


def format_http_date(moment):
    """RFC 1123 date as used in X-Goog-Channel-Expiration, e.g. Sat, 22 Mar 2025 19:14:43 GMT."""
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def zone(name, location="timeZone"):
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(f"Invalid time zone definition: {name}", location) from None


class EventTime:
    """One side of an event's time span, resolved to an aware datetime."""

    def __init__(self, moment, all_day, tz_name):
        self.moment = moment
        self.all_day = all_day
        self.tz_name = tz_name

    @classmethod
    def parse(cls, field, side, calendar_tz):
        if not isinstance(field, dict) or not (field.get("dateTime") or field.get("date")):
            raise required(f"Missing {side} time.", side)
        tz_name = field.get("timeZone")
        if field.get("date"):
            try:
                day = date.fromisoformat(field["date"])
            except ValueError:
                raise invalid(f"Invalid value for: {field['date']}", side) from None
            local = zone(tz_name or calendar_tz)
            return cls(datetime(day.year, day.month, day.day, tzinfo=local), True, tz_name)
        raw = field["dateTime"]
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise invalid(f"Invalid value for: {raw}", side) from None
        if tz_name:
            local = zone(tz_name)
            parsed = (parsed.replace(tzinfo=local) if parsed.tzinfo is None
                      else parsed.astimezone(local))
        elif parsed.tzinfo is None:
            raise required(f"Missing time zone definition for {side} time.", side)
        return cls(parsed, False, tz_name)

    def utc(self):
        return self.moment.astimezone(UTC)


def event_span(resource, calendar_tz):
    """Validated (start, end) EventTimes of an event resource."""
    start = EventTime.parse(resource.get("start"), "start", calendar_tz)
    end = EventTime.parse(resource.get("end"), "end", calendar_tz)
    if start.all_day != end.all_day:
        raise invalid("Start and end times must either both be date or both be dateTime.")
    if end.moment < start.moment:
        raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.", "calendar",
                       location="end")
    return start, end


def time_field(moment, all_day, tz_name):
    """A start/end field for an instance, in the shape the series uses."""
    if all_day:
        return {"date": moment.date().isoformat()}
    field = {"dateTime": moment.isoformat()}
    if tz_name:
        field["timeZone"] = tz_name
    return field


def instance_suffix(moment, all_day):
    if all_day:
        return moment.strftime("%Y%m%d")
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def occurrences(recurrence, start, until, all_day=False):
    """Start moments of a series: RRULE/RDATE/EXDATE lines, from ``start`` up to ``until``.

    All-day series are expanded on naive dates because their UNTIL is a bare date, which
    dateutil refuses next to an aware DTSTART.
    """
    local = start.tzinfo
    if all_day:
        start, until = start.replace(tzinfo=None), until.astimezone(local).replace(tzinfo=None)
    lines = [line for line in recurrence if line.split(":", 1)[0].split(";", 1)[0]
             in ("RRULE", "RDATE", "EXDATE", "EXRULE")]
    try:
        rules = rrulestr("\n".join(lines), dtstart=start, forceset=True, unfold=True)
    except (ValueError, TypeError):
        raise invalid("Invalid recurrence rule.", "recurrence") from None
    assert isinstance(rules, rruleset)
    found = []
    for moment in rules:
        if moment > until or len(found) >= MAX_INSTANCES:
            break
        found.append(moment.replace(tzinfo=local) if all_day else moment)
    return found


def validate_recurrence(recurrence):
    if not isinstance(recurrence, list) or not all(isinstance(r, str) for r in recurrence):
        raise invalid("Invalid recurrence rule.", "recurrence")
    for line in recurrence:
        if line.split(":", 1)[0].split(";", 1)[0] not in ("RRULE", "RDATE", "EXDATE", "EXRULE"):
            raise invalid("Invalid recurrence rule.", "recurrence")

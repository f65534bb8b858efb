"""Recurring series: the repeat rule (dateutil's rrule, RFC 5545) and its occurrences.

A rule is expanded at the wall-clock time of its first occurrence in the room's zone, as
Google expands a recurring event in its `timeZone`: "every Monday at 9" stays at 9 across a
DST change, while the UTC instant moves. `rrule_line` is the same rule as the RRULE line
Google's `recurrence` list and an iMIP invitation carry, so what we store and what Google
expands are one rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dateutil import rrule

from roombridge.booking.rules import add_error, check_repeat_end

FREQUENCIES = ("daily", "weekly", "monthly")
MONTHLY_BY = ("date", "weekday")  # "on the 10th" | "on the 2nd Tuesday" (of the first occurrence)
MAX_INTERVAL = 52
_FREQ = {"daily": rrule.DAILY, "weekly": rrule.WEEKLY, "monthly": rrule.MONTHLY}
_DAY_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


@dataclass
class Recurrence:
    frequency: str  # "daily" | "weekly" | "monthly"
    weekdays: list[int] = field(default_factory=list)  # 0 = Monday; weekly only; empty: the start's weekday
    count: int | None = None
    until: date | None = None  # inclusive, in the room's zone
    interval: int = 1  # every N days, weeks or months
    monthly: str = "date"  # monthly only: on the start's day of the month, or on its nth weekday


def _weekday_ordinal(day: date) -> int:
    """Which of the month's weekdays `day` is: 1-4, or -1 for a fifth (the last, as calendar apps say)."""
    ordinal = (day.day - 1) // 7 + 1
    return -1 if ordinal == 5 else ordinal


def _rule_parts(recurrence: Recurrence, first_local: datetime) -> dict:
    parts: dict = {"freq": _FREQ[recurrence.frequency], "interval": recurrence.interval}
    if recurrence.frequency == "weekly":
        parts["byweekday"] = sorted(set(recurrence.weekdays)) or [first_local.weekday()]
    elif recurrence.frequency == "monthly":
        if recurrence.monthly == "weekday":
            parts["byweekday"] = [rrule.weekday(first_local.weekday(), _weekday_ordinal(first_local.date()))]
        else:
            parts["bymonthday"] = [first_local.day]
    if recurrence.count is not None:
        parts["count"] = recurrence.count
    return parts


def _until_instant(until: date, zone: ZoneInfo) -> datetime:
    """The inclusive last day as the UTC instant RFC 5545 wants in UNTIL for a zoned DTSTART."""
    return datetime.combine(until, time(23, 59, 59), zone).astimezone(UTC)


def rrule_line(recurrence: Recurrence, first_start: datetime, zone: ZoneInfo) -> str:
    """The rule as an RRULE line for Google's `recurrence` list and iCalendar (UNTIL in UTC)."""
    local = first_start.astimezone(zone)
    parts = _rule_parts(recurrence, local)
    text = [f"FREQ={recurrence.frequency.upper()}"]
    if recurrence.interval != 1:
        text.append(f"INTERVAL={recurrence.interval}")
    if "byweekday" in parts:
        days = []
        for day in parts["byweekday"]:
            if isinstance(day, int):
                days.append(_DAY_CODES[day])
            else:
                days.append(f"{day.n or ''}{_DAY_CODES[day.weekday]}")
        text.append("BYDAY=" + ",".join(days))
    if "bymonthday" in parts:
        text.append(f"BYMONTHDAY={parts['bymonthday'][0]}")
    if recurrence.count is not None:
        text.append(f"COUNT={recurrence.count}")
    if recurrence.until is not None:
        text.append(f"UNTIL={_until_instant(recurrence.until, zone):%Y%m%dT%H%M%SZ}")
    return "RRULE:" + ";".join(text)


def with_until(line: str, last_start: datetime) -> str:
    """An RRULE line ended at `last_start` (an instant): COUNT and UNTIL dropped, UNTIL set to it.

    How a series is ended ("this and following": the old one stops before the split).
    """
    head, _, body = line.partition(":")
    kept = [part for part in body.split(";") if not part.startswith(("COUNT=", "UNTIL="))]
    kept.append(f"UNTIL={last_start.astimezone(UTC):%Y%m%dT%H%M%SZ}")
    return f"{head}:{';'.join(kept)}"


def shift_until(line: str, delta: timedelta) -> str:
    """An RRULE line whose UNTIL (if any) moves later by `delta`, so a series moved later keeps its last occurrence."""
    head, _, body = line.partition(":")
    parts = []
    for part in body.split(";"):
        if part.startswith("UNTIL=") and delta > timedelta(0):
            until = datetime.strptime(part[6:], "%Y%m%dT%H%M%SZ") + delta
            part = f"UNTIL={until:%Y%m%dT%H%M%SZ}"
        parts.append(part)
    return f"{head}:{';'.join(parts)}"


_DAY_NAMES = dict(zip(_DAY_CODES, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
                       strict=True))
_ORDINALS = {"1": "first", "2": "second", "3": "third", "4": "fourth", "-1": "last"}


def describe(line: str, zone: ZoneInfo) -> str:
    """An RRULE line in words, e.g. "Every 2 weeks on Monday and Thursday, until Fri 30 Jan 2026"."""
    parts = dict(part.split("=", 1) for part in line.partition(":")[2].split(";") if "=" in part)
    unit = {"DAILY": "day", "WEEKLY": "week", "MONTHLY": "month"}.get(parts.get("FREQ", ""), "time")
    interval = int(parts.get("INTERVAL", "1"))
    words = f"Every {interval} {unit}s" if interval > 1 else f"Every {unit}"
    days = []
    for code in filter(None, parts.get("BYDAY", "").split(",")):
        ordinal, name = code[:-2], _DAY_NAMES.get(code[-2:], code[-2:])
        days.append(f"the {_ORDINALS.get(ordinal, ordinal)} {name}" if ordinal else name)
    if days:
        words += " on " + (", ".join(days[:-1]) + " and " + days[-1] if len(days) > 1 else days[0])
    if "BYMONTHDAY" in parts:
        words += f" on day {parts['BYMONTHDAY']}"
    if "COUNT" in parts:
        words += f", {parts['COUNT']} times"
    elif "UNTIL" in parts:
        until = datetime.strptime(parts["UNTIL"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).astimezone(zone)
        words += f", until {until:%a %d %b %Y}"
    return words


def occurrences_of(line: str, first_start: datetime, zone: ZoneInfo, limit: int) -> list[datetime]:
    """The UTC starts an RRULE line gives from `first_start`, at its wall-clock time in `zone` (at most `limit`)."""
    local = first_start.astimezone(zone).replace(tzinfo=None)
    body = line.partition(":")[2]
    until = None
    parts = []
    for part in body.split(";"):
        if part.startswith("UNTIL="):
            until = datetime.strptime(part[6:], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        else:
            parts.append(part)
    rule = rrule.rrulestr(";".join(parts), dtstart=local)
    starts = []
    for moment in rule:
        instant = _normalise_wall_time(moment.replace(tzinfo=zone))
        if until is not None and instant > until:
            break
        starts.append(instant)
        if len(starts) >= limit:
            break
    return starts


def check_recurrence(recurrence: Recurrence, limit: int, errors: dict[str, list[str]]) -> bool:
    """The rule's own limits (frequency, days, interval, how it ends); False, with messages, if not met."""
    if recurrence.frequency not in FREQUENCIES:
        add_error(errors, "recurrence", "Repeat daily, weekly or monthly.")
        return False
    if not check_repeat_end(recurrence.count, recurrence.until, errors):
        return False
    if any(not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= 6 for d in recurrence.weekdays or []):
        add_error(errors, "recurrence", "Weekdays are 0 (Monday) to 6 (Sunday).")
        return False
    if (not isinstance(recurrence.interval, int) or isinstance(recurrence.interval, bool)
            or not 1 <= recurrence.interval <= MAX_INTERVAL):
        add_error(errors, "recurrence", f"Repeat every 1 to {MAX_INTERVAL} days, weeks or months.")
        return False
    if recurrence.monthly not in MONTHLY_BY:
        add_error(errors, "recurrence", "A monthly series repeats on a date or on a weekday.")
        return False
    if recurrence.count is not None and not 1 <= recurrence.count <= limit:
        add_error(errors, "recurrence", f"Between 1 and {limit} occurrences.")
        return False
    return True


def expand(recurrence: Recurrence | None, start: datetime, end: datetime, zone: ZoneInfo, limit: int,
           errors: dict[str, list[str]]) -> list[tuple[datetime, datetime]]:
    """Every occurrence as (start, end) in UTC, at the same wall-clock times in `zone`.

    Keeping the wall-clock time (not the UTC offset) is what people mean by "every Monday
    at 9": across a DST change the UTC instant moves and the meeting does not.
    """
    if recurrence is None:
        return [(start, end)]
    if not check_recurrence(recurrence, limit, errors):
        return []
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    if recurrence.until is not None and recurrence.until < local_start.date():
        add_error(errors, "recurrence", "The end date is before the first occurrence.")
        return []
    # One more than the limit: a rule that gives more is refused rather than cut short.
    starts = occurrences_of(rrule_line(recurrence, start, zone), start, zone, limit + 1)
    if len(starts) > limit:
        add_error(errors, "recurrence", f"At most {limit} occurrences; choose an earlier end date.")
        return []
    day_span = local_end.date() - local_start.date()
    spans = []
    for occ_start in starts:
        day = occ_start.astimezone(zone).date()
        occ_end = datetime.combine(day + day_span, local_end.time(), zone)
        spans.append((occ_start, _normalise_wall_time(occ_end)))
    return spans


def shift_wall_time(instant: datetime, delta: timedelta, zone: ZoneInfo) -> datetime:
    """`instant` moved by `delta` of wall-clock time in `zone` (an "all occurrences" move keeps local times)."""
    local = instant.astimezone(zone).replace(tzinfo=None) + delta
    return _normalise_wall_time(local.replace(tzinfo=zone))


def _normalise_wall_time(local: datetime) -> datetime:
    # A wall time skipped by a DST jump (02:30 on a spring-forward night) does not exist;
    # converting through UTC maps it to the instant an hour later, which is what clocks show.
    return local.astimezone(UTC)

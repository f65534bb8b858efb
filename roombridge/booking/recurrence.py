"""Recurring series: every occurrence of a daily or weekly rule, at the same wall-clock time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from roombridge.booking.rules import add_error, check_repeat_end

FREQUENCIES = ("daily", "weekly")


@dataclass
class Recurrence:
    frequency: str  # "daily" | "weekly"
    weekdays: list[int] = field(default_factory=list)  # 0 = Monday; weekly only; empty: the start's weekday
    count: int | None = None
    until: date | None = None  # inclusive, in the room's zone



def expand(recurrence: Recurrence | None, start: datetime, end: datetime, zone: ZoneInfo, limit: int,
           errors: dict[str, list[str]]) -> list[tuple[datetime, datetime]]:
    """Every occurrence as (start, end) in UTC, at the same wall-clock times in `zone`.

    Keeping the wall-clock time (not the UTC offset) is what people mean by "every Monday
    at 9": across a DST change the UTC instant moves and the meeting does not.
    """
    if recurrence is None:
        return [(start, end)]
    if recurrence.frequency not in FREQUENCIES:
        add_error(errors, "recurrence", "Repeat daily or weekly.")
        return []
    if not check_repeat_end(recurrence.count, recurrence.until, errors):
        return []
    weekdays = sorted(set(recurrence.weekdays or []))
    if any(not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= 6 for d in weekdays):
        add_error(errors, "recurrence", "Weekdays are 0 (Monday) to 6 (Sunday).")
        return []
    if recurrence.count is not None and not 1 <= recurrence.count <= limit:
        add_error(errors, "recurrence", f"Between 1 and {limit} occurrences.")
        return []
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    if recurrence.frequency == "weekly" and not weekdays:
        weekdays = [local_start.weekday()]
    if recurrence.until is not None and recurrence.until < local_start.date():
        add_error(errors, "recurrence", "The end date is before the first occurrence.")
        return []
    day_span = local_end.date() - local_start.date()
    occurrences: list[tuple[datetime, datetime]] = []
    day = local_start.date()
    while True:
        if recurrence.count is not None and len(occurrences) >= recurrence.count:
            break
        if recurrence.until is not None and day > recurrence.until:
            break
        if recurrence.frequency == "daily" or day.weekday() in weekdays:
            if len(occurrences) >= limit:
                add_error(errors, "recurrence", f"At most {limit} occurrences; choose an earlier end date.")
                return []
            occ_start = datetime.combine(day, local_start.time(), zone)
            occ_end = datetime.combine(day + day_span, local_end.time(), zone)
            occurrences.append((_normalise_wall_time(occ_start), _normalise_wall_time(occ_end)))
        day += timedelta(days=1)
    return occurrences


def _normalise_wall_time(local: datetime) -> datetime:
    # A wall time skipped by a DST jump (02:30 on a spring-forward night) does not exist;
    # converting through UTC maps it to the instant an hour later, which is what clocks show.
    return local.astimezone(UTC)

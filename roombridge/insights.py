"""Utilisation insight: how the rooms were really used over a date range.

The figures, per room and in total, over reservations that START in [start, end] (whole UTC
days, both ends included) and were not cancelled or in conflict (nor later instances of a
Google series the room declined for its no-shows: never held, never a no-show):

- `booked_hours`: the time booked, as booked (a meeting ended early counts its booked end);
- `checked_in_hours`: the time of meetings someone checked in to, as held (to their end, or
  to the moment they were ended early);
- `released_hours`: the booked time of no-shows released by the deadline (status released);
- `ended_early_hours`: the time given back by "end early" (booked end minus actual end);
- `no_show_rate`: no-shows (released or only flagged) among meetings whose check-in was
  decided either way (checked in, or missed), None when there were none;
- bookings by `source` (web, api, google, display); average people (organiser + attendees)
  against capacity, for right-sizing;
- occupancy by weekday x hour of day, in each room's own time zone: the share of room-hours
  held by a booking that was not released.

Everything is summed in the database. Live, from the reservations: one GROUP BY query for
the rooms, one for the heatmap (generate_series on PostgreSQL; on SQLite, whose SQL knows no
time zones, the rows are bucketed here, which suits the small deployments SQLite is for).
At scale a year is millions of rows, so an hourly job (jobs/insights.py) keeps a rollup:
each UTC day (`room_usage_days` per room, `usage_hour_days` per building, floor, weekday and
hour), each whole month summed from its days (`room_usage_months`, `usage_hour_months`), and
running sums (`room_usage_to_date`: per room and day, the figures from the first of the
month through that day). It sums every day of the last 13 months once, the latest days
again on every run (check-ins, releases and syncs land after midnight), and any day whose
reservations changed since its last run (found by `updated_at`), then the months of the
days it summed and their running sums.

A range is answered from whole months' rows; the rest of a month before today from two
running-sum rows per room (its last day minus the day before its first: 30 days cost as
much as one); and only today (and later days, and any day not summed yet) live. Rooms,
figures and the total come in ONE query, summed by the database (GROUP BY per room, a
window over the groups for the total), never per room in Python. The answer equals the
live one (tested for ragged ranges and every filter). A room filter reads the heatmap live
(its rollup is by building and floor; one room is cheap). Known limit: the heatmap rollup
keeps the building and floor a room had when its day was summed. See
benchmarks/insights.py for 10,000 rooms x a year.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from roombridge.models import (
    LIVE_STATUSES,
    ReleaseReason,
    Reservation,
    ReservationSource,
    ReservationStatus,
    Room,
    RoomUsageDay,
    RoomUsageMonth,
    RoomUsageToDate,
    UsageHourDay,
    UsageHourMonth,
    UsageRollup,
    UsageRollupDay,
    UsageToDateMonth,
)
from roombridge.unit_of_work import unit_of_work

COUNTED = (*LIVE_STATUSES, ReservationStatus.RELEASED)
SOURCES = tuple(s.value for s in ReservationSource)
MAX_DAYS = 366
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# A room booked on average by this share of its seats or fewer is worth a look (right-sizing).
OVERSIZED_SHARE = 1 / 3


class InvalidRange(ValueError):
    pass


@dataclass
class Figures:
    """The figures of one room, or of all the rooms in the filter (`room_id` None)."""

    room_id: int | None = None
    calendar_id: str = ""
    name: str = "All rooms"
    building: str | None = None
    floor: str | None = None
    capacity: int | None = None
    bookings: int = 0
    booked_hours: float = 0.0
    checked_in_hours: float = 0.0
    released_hours: float = 0.0
    ended_early_hours: float = 0.0
    checked_in: int = 0
    no_shows: int = 0
    people: int = 0  # organiser + attendees, summed over bookings
    sources: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))

    @property
    def no_show_rate(self) -> float | None:
        decided = self.checked_in + self.no_shows
        return round(self.no_shows / decided, 4) if decided else None

    @property
    def average_people(self) -> float | None:
        return round(self.people / self.bookings, 2) if self.bookings else None

    @property
    def oversized(self) -> bool:
        average = self.average_people
        return bool(self.capacity and average is not None and average <= self.capacity * OVERSIZED_SHARE)

    def add(self, other: Figures) -> None:
        for name in ("bookings", "booked_hours", "checked_in_hours", "released_hours", "ended_early_hours",
                     "checked_in", "no_shows", "people"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for source, count in other.sources.items():
            self.sources[source] += count

    def as_dict(self) -> dict:
        return {
            "room_id": self.room_id, "calendar_id": self.calendar_id, "name": self.name,
            "building": self.building, "floor": self.floor, "capacity": self.capacity,
            "bookings": self.bookings,
            "booked_hours": round(self.booked_hours, 2), "checked_in_hours": round(self.checked_in_hours, 2),
            "released_hours": round(self.released_hours, 2), "ended_early_hours": round(self.ended_early_hours, 2),
            "no_show_rate": self.no_show_rate, "average_people": self.average_people,
            "sources": dict(self.sources),
        }


@dataclass
class Insights:
    start: date
    end: date  # included
    rooms: list[Figures]
    total: Figures
    # occupancy[weekday][hour]: percent of room-hours held (weekday 0 = Monday; room-local time)
    occupancy: list[list[float]]


def parse_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """The [start, end] of query text (YYYY-MM-DD); default the last 28 days up to today."""
    try:
        last = date.fromisoformat(end) if end else today
        first = date.fromisoformat(start) if start else last - timedelta(days=27)
    except ValueError as exc:
        raise InvalidRange("dates are YYYY-MM-DD") from exc
    if first > last:
        raise InvalidRange("the start is after the end")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidRange(f"at most {MAX_DAYS} days at a time")
    return first, last


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time(0), UTC), datetime.combine(end + timedelta(days=1), time(0), UTC)


def _seconds(session: Session, later, earlier):
    if session.get_bind().dialect.name == "postgresql":
        return sa.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400


def _without_jit(session: Session) -> None:
    """PostgreSQL's JIT compiles a query whose estimate looks big (generate_series is guessed at 1,000 rows
    a call): measured, compiling took seconds for a query that runs in tens of milliseconds. And the
    per-room sums of 10,000 rooms need a few MB of hash table: with the default work_mem (4 MB) the
    aggregate spilled to disk in five batches; 64 MB for this transaction keeps it in memory."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL jit = off"))
        session.execute(sa.text("SET LOCAL work_mem = '64MB'"))


def _people():
    return 1 + sa.func.coalesce(sa.func.json_array_length(Reservation.attendees), 0)


def _room_query(building: str | None, floor: str | None, room_ids: Sequence[int] | None):
    query = sa.select(Room).where(Room.in_scope.is_(True))
    if building:
        query = query.where(Room.building == building)
    if floor:
        query = query.where(Room.floor == floor)
    if room_ids is not None:
        query = query.where(Room.id.in_(list(room_ids)))
    return query


# --- the plan: which days come from which rollup, which are read live ----------------------------


def _next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def _month_end(month: date) -> date:
    return _next_month(month) - timedelta(days=1)


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def _ranges(days: Sequence[date]) -> list[tuple[date, date]]:
    """Consecutive days as [first, last] ranges."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(days):
        if ranges and ranges[-1][1] + timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


@dataclass(frozen=True)
class Plan:
    """Where each day of a range is read from: whole summed months, running sums, summed days, or the
    reservations."""

    months: list[date] = field(default_factory=list)  # whole months read from the monthly rollup
    to_date: list[tuple[date, date]] = field(default_factory=list)  # in one month each: two running-sum rows
    days: list[tuple[date, date]] = field(default_factory=list)  # day ranges read from the daily rollup
    live: list[tuple[date, date]] = field(default_factory=list)  # day ranges read from the reservations


def plan(session: Session, start: date, end: date, today: date) -> Plan:
    """Today and later are always read live (they change by the minute); every earlier day from the
    rollup if it has been summed: a whole month from its month row, the days of a month in between
    from its running sums (the row of the last day minus the row of the day before the first) if
    they reach that far, else from the day rows."""
    past = [d for d in _days(start, end) if d < today]
    whole = [m for m in {d.replace(day=1) for d in past} if m >= start and _month_end(m) <= end
             and _month_end(m) < today]
    months = sorted(rolled_months(session, whole))
    in_months = {d for m in months for d in _days(m, _month_end(m))}
    rest = [d for d in past if d not in in_months]
    summed = rolled_days(session, rest)
    runs = [(first, last) for span in _ranges([d for d in rest if d in summed]) for first, last in _by_month(*span)]
    through = to_date_through(session, {first.replace(day=1) for first, _ in runs})
    return Plan(months=months,
                to_date=[(first, last) for first, last in runs if through.get(first.replace(day=1), first) >= last],
                days=[(first, last) for first, last in runs if through.get(first.replace(day=1), first) < last],
                live=_ranges([d for d in _days(start, end) if d not in in_months and d not in summed]))


def _by_month(first: date, last: date) -> list[tuple[date, date]]:
    """[first, last] cut at month ends."""
    parts = []
    while first <= last:
        parts.append((first, min(last, _month_end(first))))
        first = _month_end(first) + timedelta(days=1)
    return parts


def to_date_through(session: Session, months: set[date]) -> dict[date, date]:
    """How far each month's running sums reach."""
    if not months:
        return {}
    return dict(session.execute(sa.select(UsageToDateMonth.month, UsageToDateMonth.through)
                                .where(UsageToDateMonth.month.in_(sorted(months)))).all())


def rolled_months(session: Session, months: Sequence[date]) -> set[date]:
    if not months:
        return set()
    return set(session.scalars(sa.select(UsageRollup.month).where(UsageRollup.month.in_(list(months)))))


def rolled_days(session: Session, days: Sequence[date]) -> set[date]:
    if not days:
        return set()
    return set(session.scalars(sa.select(UsageRollupDay.day).where(UsageRollupDay.day >= min(days),
                                                                    UsageRollupDay.day <= max(days))))


def _in_ranges(column, ranges: list[tuple[date, date]]):
    return sa.or_(*(column.between(first, last) for first, last in ranges))


# --- the figures ------------------------------------------------------------------------------------


def _live_where(ranges: list[tuple[date, date]], room_ids=None):
    """Counted reservations starting on the days of `ranges` (whole UTC days), in the rooms `room_ids`."""
    starts = []
    for first, last in ranges:
        lower, upper = _bounds(first, last)
        starts.append(sa.and_(Reservation.start_at >= lower, Reservation.start_at < upper))
    where = sa.and_(sa.or_(*starts), Reservation.status.in_(COUNTED),
                    Reservation.release_reason.is_distinct_from(ReleaseReason.SERIES_ENDED))
    return where if room_ids is None else sa.and_(where, Reservation.room_id.in_(room_ids))


ROLLUP_COLUMNS = ("bookings", "booked_seconds", "checked_in_seconds", "released_seconds", "ended_early_seconds",
                  "checked_in", "no_shows", "people", *(f"source_{s}" for s in SOURCES))


def _live_columns(session: Session) -> list:
    """The rollup's columns summed over reservations, in ROLLUP_COLUMNS order, per room (group by room_id)."""
    held = _seconds(session, Reservation.end_at, Reservation.start_at)
    booked = _seconds(session, sa.func.coalesce(Reservation.original_end_at, Reservation.end_at), Reservation.start_at)
    given_back = _seconds(session, Reservation.original_end_at, Reservation.end_at)
    released = Reservation.status == ReservationStatus.RELEASED

    def when(condition, value):
        return sa.func.sum(sa.case((condition, value), else_=0))

    values = [
        sa.func.count(),
        sa.func.sum(booked),
        when(Reservation.checked_in_at.is_not(None), held),
        when(released, held),
        when(Reservation.ended_early_at.is_not(None) & Reservation.original_end_at.is_not(None), given_back),
        when(Reservation.checked_in_at.is_not(None), 1),
        when(Reservation.missed_checkin_at.is_not(None) | released, 1),
        sa.func.sum(_people()),
        *(when(Reservation.source == source, 1) for source in SOURCES),
    ]
    return [value.label(name) for value, name in zip(values, ROLLUP_COLUMNS, strict=True)]


def _live_by_room(session: Session, where):
    return sa.select(Reservation.room_id, *_live_columns(session)).where(where).group_by(Reservation.room_id)


def _parts(session: Session, found: Plan, room_ids) -> list:
    """SELECTs of (room_id, ROLLUP_COLUMNS...) whose rows, summed per room, are the range's figures."""
    parts = []
    # Without a filter every in-scope room is wanted, and the join with the rooms keeps only those:
    # no IN (...) here then, which would cost a hash join per part.
    if found.months:
        parts.append(sa.select(RoomUsageMonth.room_id, *(getattr(RoomUsageMonth, c) for c in ROLLUP_COLUMNS))
                     .where(RoomUsageMonth.month.in_(found.months),
                            *([RoomUsageMonth.room_id.in_(room_ids)] if room_ids is not None else [])))
    if found.days:
        parts.append(sa.select(RoomUsageDay.room_id, *(getattr(RoomUsageDay, c) for c in ROLLUP_COLUMNS))
                     .where(_in_ranges(RoomUsageDay.day, found.days),
                            *([RoomUsageDay.room_id.in_(room_ids)] if room_ids is not None else [])))
    if found.to_date:
        # [first, last] of a month: its running sums at `last`, minus those the day before `first`.
        rooms = [RoomUsageToDate.room_id.in_(room_ids)] if room_ids is not None else []
        ends = [last for _, last in found.to_date]
        befores = [first - timedelta(days=1) for first, _ in found.to_date if first.day > 1]
        parts.append(sa.select(RoomUsageToDate.room_id, *(getattr(RoomUsageToDate, c) for c in ROLLUP_COLUMNS))
                     .where(RoomUsageToDate.day.in_(ends), *rooms))
        if befores:
            parts.append(sa.select(RoomUsageToDate.room_id,
                                   *((-getattr(RoomUsageToDate, c)).label(c) for c in ROLLUP_COLUMNS))
                         .where(RoomUsageToDate.day.in_(befores), *rooms))
    if found.live:
        parts.append(_live_by_room(session, _live_where(found.live, room_ids)))
    return parts


def _figures(session: Session, found: Plan, room_query, filtered: bool) -> tuple[list[Figures], Figures]:
    """Every room of `room_query` with its figures, and the total: ONE query, summed in the database
    (per room by GROUP BY, over all rooms by a window over the groups), read as plain rows."""
    ids = room_query.with_only_columns(Room.id) if filtered else None
    parts = _parts(session, found, ids)
    room_columns = (Room.id, Room.calendar_id, Room.name, Room.building, Room.floor, Room.capacity)
    if parts:
        usage = sa.union_all(*parts).subquery("usage") if len(parts) > 1 else parts[0].subquery("usage")
        sums = [sa.func.coalesce(sa.func.sum(usage.c[c]), 0) for c in ROLLUP_COLUMNS]
        query = room_query.outerjoin(usage, usage.c.room_id == Room.id)
    else:
        sums = [sa.literal(0) for _ in ROLLUP_COLUMNS]
        query = room_query
    totals = [sa.func.sum(value).over() for value in sums]
    query = (query.with_only_columns(*room_columns, *sums, *totals, sa.func.sum(Room.capacity).over())
             .group_by(*room_columns).order_by(Room.building, Room.floor, Room.name))
    rooms, total = [], Figures()
    width = len(ROLLUP_COLUMNS)
    for row in session.execute(query):
        room_id, calendar_id, name, building, floor, capacity = row[:6]
        figures = _figures_of(row[6:6 + width])
        figures.room_id, figures.calendar_id, figures.name = room_id, calendar_id, name
        figures.building, figures.floor, figures.capacity = building, floor, capacity
        rooms.append(figures)
        if len(rooms) == 1:
            total = _figures_of(row[6 + width:6 + 2 * width])
            total.capacity = int(row[-1]) if row[-1] else None
    return rooms, total


def _figures_of(row: Sequence) -> Figures:
    """Figures from (bookings, 4 x seconds, checked_in, no_shows, people, sources...)."""
    bookings, booked_s, checked_s, released_s, early_s, checked_in, no_shows, people, *by_source = row
    return Figures(
        bookings=int(bookings or 0), booked_hours=float(booked_s or 0) / 3600,
        checked_in_hours=float(checked_s or 0) / 3600, released_hours=float(released_s or 0) / 3600,
        ended_early_hours=float(early_s or 0) / 3600, checked_in=int(checked_in or 0), no_shows=int(no_shows or 0),
        people=int(people or 0), sources={s: int(n or 0) for s, n in zip(SOURCES, by_source, strict=True)},
    )


def compute(session: Session, start: date, end: date, *, building: str | None = None, floor: str | None = None,
            room_ids: Sequence[int] | None = None, today: date | None = None, rollup: bool = True) -> Insights:
    """The figures of the in-scope rooms matching the filters, for reservations starting in [start, end].

    Days before today come from the rollup where it has summed them (whole months from the
    monthly rows, other days from the daily rows); today, later days and days not summed yet
    from the reservations. `rollup=False` reads everything live: the same figures (tested).
    """
    _without_jit(session)
    today = today or datetime.now(UTC).date()
    found = plan(session, start, end, today) if rollup else Plan(live=[(start, end)])
    room_query = _room_query(building, floor, room_ids)
    rooms, total = _figures(session, found, room_query, bool(building or floor or room_ids is not None))

    seconds = _empty_grid()
    if rooms:
        ids = room_query.with_only_columns(Room.id)
        if room_ids is not None:  # the heatmap rollup is by building and floor, not by room: one room is cheap
            found = Plan(live=[(start, end)])
        if found.live:
            for grid in _held_by_hour(session, _live_where(found.live, ids)).values():
                _add_grid(seconds, grid)
        if found.months:
            _add_grid(seconds, _rolled_hours(session, UsageHourMonth.month.in_(found.months), UsageHourMonth,
                                             building, floor))
        if found.days or found.to_date:  # the heatmap has no running sums: its day rows are few
            _add_grid(seconds, _rolled_hours(session, _in_ranges(UsageHourDay.day, found.days + found.to_date),
                                             UsageHourDay, building, floor))
    return Insights(start, end, rooms, total, _occupancy(start, end, seconds, len(rooms)))


# --- occupancy by weekday x hour ---------------------------------------------------------------


def _weekday_counts(start: date, end: date) -> list[int]:
    counts = [0] * 7
    day = start
    while day <= end:
        counts[day.weekday()] += 1
        day += timedelta(days=1)
    return counts


def _empty_grid() -> list[list[float]]:
    return [[0.0] * 24 for _ in range(7)]


def _add_grid(into: list[list[float]], grid: list[list[float]]) -> None:
    for wd in range(7):
        for h in range(24):
            into[wd][h] += grid[wd][h]


def _occupancy(start: date, end: date, seconds: list[list[float]], room_count: int) -> list[list[float]]:
    days = _weekday_counts(start, end)
    return [[round(100 * seconds[wd][h] / (3600 * room_count * days[wd]), 1) if room_count and days[wd] else 0.0
             for h in range(24)] for wd in range(7)]


NOT_RELEASED = Reservation.status != ReservationStatus.RELEASED
Place = tuple[str | None, str | None]  # (building, floor)


def _held_by_hour(session: Session, where) -> dict[Place, list[list[float]]]:
    """Seconds held by non-released bookings in `where`, by weekday x hour of each room's own time."""
    if session.get_bind().dialect.name == "postgresql":
        return _held_by_hour_sql(session, where)
    return _held_by_hour_here(session, where)


def _held_by_hour_sql(session: Session, where) -> dict[Place, list[list[float]]]:
    # Each booking, in its room's local wall-clock time, split into the hours it touches.
    local_start = sa.func.timezone(Room.time_zone, Reservation.start_at)
    local_end = sa.func.timezone(Room.time_zone, Reservation.end_at)
    inner = (
        sa.select(Room.building, Room.floor, local_start.label("ls"), local_end.label("le"))
        .select_from(Reservation)
        .join(Room, Room.id == Reservation.room_id)
        .where(where, NOT_RELEASED)
        .subquery()
    )
    slot = sa.func.generate_series(
        sa.func.date_trunc("hour", inner.c.ls), inner.c.le - sa.text("interval '1 microsecond'"),
        sa.text("interval '1 hour'"),
    ).table_valued("value").render_derived(name="slot")
    hour_end = slot.c.value + sa.text("interval '1 hour'")
    overlap = sa.extract("epoch", sa.func.least(inner.c.le, hour_end) - sa.func.greatest(inner.c.ls, slot.c.value))
    weekday = sa.cast(sa.extract("isodow", slot.c.value), sa.Integer) - 1
    hour = sa.cast(sa.extract("hour", slot.c.value), sa.Integer)
    keys = (inner.c.building, inner.c.floor, weekday, hour)
    query = sa.select(*keys, sa.func.sum(overlap)).select_from(inner).join(slot, sa.true()).group_by(*keys)
    grids: dict[Place, list[list[float]]] = {}
    for building, floor, wd, h, total in session.execute(query):
        grids.setdefault((building, floor), _empty_grid())[wd][h] += float(total or 0)
    return grids


def _held_by_hour_here(session: Session, where) -> dict[Place, list[list[float]]]:
    rows = session.execute(
        sa.select(Reservation.start_at, Reservation.end_at, Room.time_zone, Room.building, Room.floor)
        .join(Room, Room.id == Reservation.room_id).where(where, NOT_RELEASED)
    )
    zones: dict[str, ZoneInfo] = {}
    grids: dict[Place, list[list[float]]] = {}
    for start_at, end_at, zone_name, building, floor in rows:
        zone = zones.get(zone_name) or zones.setdefault(zone_name, _zone(zone_name))
        seconds = grids.setdefault((building, floor), _empty_grid())
        # Naive wall-clock times, as PostgreSQL's timezone() gives, so both databases agree.
        local_start = start_at.astimezone(zone).replace(tzinfo=None)
        local_end = end_at.astimezone(zone).replace(tzinfo=None)
        slot = local_start.replace(minute=0, second=0, microsecond=0)
        while slot < local_end:
            following = slot + timedelta(hours=1)
            seconds[slot.weekday()][slot.hour] += (min(local_end, following) - max(local_start, slot)).total_seconds()
            slot = following
    return grids


def _rolled_hours(session: Session, where, table, building: str | None, floor: str | None):
    """The heatmap's seconds from a rollup table (UsageHourMonth or UsageHourDay) in `where`."""
    query = sa.select(table.weekday, table.hour, sa.func.sum(table.held_seconds)).where(where)
    if building:
        query = query.where(table.building == building)
    if floor:
        query = query.where(table.floor == floor)
    grid = _empty_grid()
    for wd, h, total in session.execute(query.group_by(table.weekday, table.hour)):
        grid[wd][h] += float(total or 0)
    return grid


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, OSError):
        return ZoneInfo("UTC")


# --- the rollup -----------------------------------------------------------------------------------

ROLLUP_MONTHS_BACK = 13  # the rollup job fills in any day of the last 13 whole months not summed yet
ROLLUP_SETTLE_DAYS = 2  # and sums the latest days again: check-ins, releases and syncs land after midnight
# A change is found by its reservation's updated_at; a unit of work that stamped it just before
# the last run's read and committed after it is still found, within this margin.
CHANGE_MARGIN = timedelta(minutes=15)


def refresh_day(session: Session, day: date) -> None:
    """Sum one UTC day (reservations starting on it) into the daily rollup, replacing what it held."""
    with unit_of_work(session):
        _without_jit(session)
        for table in (RoomUsageDay, UsageHourDay, UsageRollupDay):
            session.execute(sa.delete(table).where(table.day == day))
        # Every room's figures (the query that reads them filters by scope), in the database itself.
        live = _live_by_room(session, _live_where([(day, day)])).subquery()
        session.execute(sa.insert(RoomUsageDay).from_select(
            ["room_id", "day", *ROLLUP_COLUMNS],
            sa.select(live.c.room_id, sa.literal(day, sa.Date), *(live.c[c] for c in ROLLUP_COLUMNS))))
        in_scope = _room_query(None, None, None).with_only_columns(Room.id)
        hours = [{"day": day, "building": building, "floor": floor, "weekday": wd, "hour": h,
                  "held_seconds": grid[wd][h]}
                 for (building, floor), grid in _held_by_hour(session, _live_where([(day, day)], in_scope)).items()
                 for wd in range(7) for h in range(24) if grid[wd][h]]
        if hours:
            session.execute(sa.insert(UsageHourDay), hours)
        session.add(UsageRollupDay(day=day))


def sum_month(session: Session, month: date) -> None:
    """Sum a whole month's day rows into its month rows (its days must all be summed)."""
    month = month.replace(day=1)
    days = UsageRollupDay.day.between(month, _month_end(month))
    with unit_of_work(session):
        for table in (RoomUsageMonth, UsageHourMonth, UsageRollup):
            session.execute(sa.delete(table).where(table.month == month))
        session.execute(sa.insert(RoomUsageMonth).from_select(
            ["room_id", "month", *ROLLUP_COLUMNS],
            sa.select(RoomUsageDay.room_id, sa.literal(month, sa.Date),
                      *(sa.func.sum(getattr(RoomUsageDay, c)) for c in ROLLUP_COLUMNS))
            .where(RoomUsageDay.day.between(month, _month_end(month))).group_by(RoomUsageDay.room_id)))
        keys = (UsageHourDay.building, UsageHourDay.floor, UsageHourDay.weekday, UsageHourDay.hour)
        session.execute(sa.insert(UsageHourMonth).from_select(
            ["month", "building", "floor", "weekday", "hour", "held_seconds"],
            sa.select(sa.literal(month, sa.Date), *keys, sa.func.sum(UsageHourDay.held_seconds))
            .where(UsageHourDay.day.between(month, _month_end(month))).group_by(*keys)))
        summed = session.scalar(sa.select(sa.func.count()).where(days))
        if summed != (_month_end(month) - month).days + 1:
            raise ValueError(f"{month:%Y-%m}: only {summed} of its days are summed")
        session.add(UsageRollup(month=month))


def sum_to_date(session: Session, month: date, through: date) -> None:
    """A month's running sums, from its day rows, for each day from its first through `through`."""
    month = month.replace(day=1)
    with unit_of_work(session):
        _without_jit(session)
        session.execute(sa.delete(RoomUsageToDate).where(RoomUsageToDate.day.between(month, _month_end(month))))
        for day in _days(month, through):
            # A room booked by `day` this month gets a row; one not booked yet sums to nothing: no row.
            session.execute(sa.insert(RoomUsageToDate).from_select(
                ["room_id", "day", *ROLLUP_COLUMNS],
                sa.select(RoomUsageDay.room_id, sa.literal(day, sa.Date),
                          *(sa.func.sum(getattr(RoomUsageDay, c)) for c in ROLLUP_COLUMNS))
                .where(RoomUsageDay.day.between(month, day)).group_by(RoomUsageDay.room_id)))
        session.execute(sa.delete(UsageToDateMonth).where(UsageToDateMonth.month == month))
        session.add(UsageToDateMonth(month=month, through=through))


def refresh_month(session: Session, month: date) -> None:
    """Sum every day of a whole month, then the month and its running sums."""
    for day in _days(month.replace(day=1), _month_end(month)):
        refresh_day(session, day)
    sum_month(session, month)
    sum_to_date(session, month, _month_end(month))


def _changed_days(session: Session, since: datetime, first: date, today: date) -> set[date]:
    """The days (by start) of reservations changed since `since`, in [first, today)."""
    lower, upper = _bounds(first, today - timedelta(days=1))
    starts = session.scalars(sa.select(Reservation.start_at).where(
        Reservation.updated_at >= since, Reservation.start_at >= lower, Reservation.start_at < upper).distinct())
    return {start_at.astimezone(UTC).date() for start_at in starts}


def refresh_rollup(session: Session, today: date) -> tuple[list[date], list[date]]:
    """Bring the rollup up to date; the days and the months summed.

    Every day of the last ROLLUP_MONTHS_BACK whole months and of this month before today is
    summed once; the latest days again on every run, and any day whose reservations changed
    since the previous run (a late sync, an edit of the past); then every whole month one of
    whose days was summed, from its day rows.
    """
    first = today.replace(day=1)
    for _ in range(ROLLUP_MONTHS_BACK):
        first = (first - timedelta(days=1)).replace(day=1)
    with unit_of_work(session, write=False):
        window = _days(first, today - timedelta(days=1))
        summed = rolled_days(session, window)
        last_run = session.scalar(sa.select(sa.func.max(UsageRollupDay.refreshed_at)))
        changed = _changed_days(session, last_run - CHANGE_MARGIN, first, today) if last_run else set()
        whole = [m for m in {d.replace(day=1) for d in window} if _month_end(m) < today]
        months_summed = rolled_months(session, whole)
        to_date_done = to_date_through(session, {d.replace(day=1) for d in window})
    due = sorted({d for d in window if d not in summed or d >= today - timedelta(days=ROLLUP_SETTLE_DAYS)} | changed)
    for day in due:
        refresh_day(session, day)
    months = sorted({d.replace(day=1) for d in due if d.replace(day=1) in whole} | (set(whole) - months_summed))
    for month in months:
        sum_month(session, month)
    # Running sums, for ranges that are not whole months: every month a summed day changed, and this
    # month (its days so far); each month of the window once.
    yesterday = today - timedelta(days=1)
    running = {d.replace(day=1) for d in due} | ({m.replace(day=1) for m in window} - set(to_date_done))
    for month in sorted(running):
        sum_to_date(session, month, min(_month_end(month), yesterday))
    return due, months


def buildings(session: Session) -> list[str]:
    return list(session.scalars(sa.select(Room.building).where(Room.in_scope.is_(True), Room.building.is_not(None))
                                .distinct().order_by(Room.building)))


def floors(session: Session, building: str | None = None) -> list[str]:
    query = sa.select(Room.floor).where(Room.in_scope.is_(True), Room.floor.is_not(None))
    if building:
        query = query.where(Room.building == building)
    return list(session.scalars(query.distinct().order_by(Room.floor)))

"""Utilisation insight: how the rooms were really used over a date range.

The figures, per room and in total, over reservations that START in [start, end] (whole UTC
days, both ends included) and were not cancelled or in conflict:

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
At scale a year is millions of rows, so whole UTC months are summed once into a rollup
(`room_usage_months` per room; `usage_hour_months` per building, floor, weekday and hour)
by an hourly job (jobs/insights.py): it sums the two latest whole months again, for late
edits and syncs, and fills in any month of the last year not summed yet. A range reads the
rollup for its whole months that have been summed, and the reservations for the rest (its
ends, the current month, months not summed yet): the same figures either way (tested).
A room filter reads the heatmap live (the rollup is by building and floor; one room is
cheap). See benchmarks/insights.py for 10,000 rooms x a year.
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
    Reservation,
    ReservationSource,
    ReservationStatus,
    Room,
    RoomUsageMonth,
    UsageHourMonth,
    UsageRollup,
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
    a call): measured, compiling took seconds for a query that runs in tens of milliseconds."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL jit = off"))


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


# --- the figures, live from reservations or from the monthly rollup ------------------------------


def _next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def _split(start: date, end: date) -> tuple[list[date], list[tuple[date, date]]]:
    """The whole months inside [start, end], and the ranges of days left over at its ends."""
    months, rest = [], []
    day = start
    while day <= end:
        month, following = day.replace(day=1), _next_month(day.replace(day=1))
        last = min(end, following - timedelta(days=1))
        if day == month and last == following - timedelta(days=1):
            months.append(month)
        else:
            rest.append((day, last))
        day = following
    return months, rest


def _merge(ranges: list[tuple[date, date]]) -> list[tuple[date, date]]:
    merged: list[tuple[date, date]] = []
    for first, last in sorted(ranges):
        if merged and merged[-1][1] + timedelta(days=1) == first:
            merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _live_where(start: date, end: date, room_ids):
    lower, upper = _bounds(start, end)
    return sa.and_(Reservation.start_at >= lower, Reservation.start_at < upper, Reservation.status.in_(COUNTED),
                   Reservation.room_id.in_(room_ids))


def _live_figures(session: Session, where) -> dict[int, Figures]:
    """Per room, summed from the reservations in `where`: ONE GROUP BY query."""
    held = _seconds(session, Reservation.end_at, Reservation.start_at)
    booked = _seconds(session, sa.func.coalesce(Reservation.original_end_at, Reservation.end_at), Reservation.start_at)
    given_back = _seconds(session, Reservation.original_end_at, Reservation.end_at)
    released = Reservation.status == ReservationStatus.RELEASED

    def when(condition, value):
        return sa.func.sum(sa.case((condition, value), else_=0))

    columns = [
        Reservation.room_id,
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
    return {row[0]: _figures_of(row[1:]) for row in
            session.execute(sa.select(*columns).where(where).group_by(Reservation.room_id))}


def _figures_of(row: Sequence) -> Figures:
    """Figures from (bookings, 4 x seconds, checked_in, no_shows, people, sources...)."""
    bookings, booked_s, checked_s, released_s, early_s, checked_in, no_shows, people, *by_source = row
    return Figures(
        bookings=int(bookings or 0), booked_hours=float(booked_s or 0) / 3600,
        checked_in_hours=float(checked_s or 0) / 3600, released_hours=float(released_s or 0) / 3600,
        ended_early_hours=float(early_s or 0) / 3600, checked_in=int(checked_in or 0), no_shows=int(no_shows or 0),
        people=int(people or 0), sources={s: int(n or 0) for s, n in zip(SOURCES, by_source, strict=True)},
    )


ROLLUP_COLUMNS = ("bookings", "booked_seconds", "checked_in_seconds", "released_seconds", "ended_early_seconds",
                  "checked_in", "no_shows", "people", *(f"source_{s}" for s in SOURCES))


def _rolled_figures(session: Session, months: list[date], room_ids) -> dict[int, Figures]:
    query = (sa.select(RoomUsageMonth.room_id,
                       *(sa.func.sum(getattr(RoomUsageMonth, c)) for c in ROLLUP_COLUMNS))
             .where(RoomUsageMonth.month.in_(months), RoomUsageMonth.room_id.in_(room_ids))
             .group_by(RoomUsageMonth.room_id))
    return {row[0]: _figures_of(row[1:]) for row in session.execute(query)}


def rolled_months(session: Session, months: list[date]) -> set[date]:
    if not months:
        return set()
    return set(session.scalars(sa.select(UsageRollup.month).where(UsageRollup.month.in_(months))))


def compute(session: Session, start: date, end: date, *, building: str | None = None, floor: str | None = None,
            room_ids: Sequence[int] | None = None) -> Insights:
    """The figures of the in-scope rooms matching the filters, for reservations starting in [start, end].

    Whole months the rollup has summed are read from it; the days around them, and months
    not rolled up yet, from the reservations themselves. Both give the same figures.
    """
    _without_jit(session)
    room_query = _room_query(building, floor, room_ids)
    rooms = list(session.scalars(room_query.order_by(Room.building, Room.floor, Room.name)))
    ids = room_query.with_only_columns(Room.id)
    months, rest = _split(start, end)
    rolled = sorted(rolled_months(session, months))
    live = _merge(rest + [(m, _next_month(m) - timedelta(days=1)) for m in months if m not in rolled])

    parts = [_rolled_figures(session, rolled, ids)] if rolled else []
    parts += [_live_figures(session, _live_where(first, last, ids)) for first, last in live]
    figures, total = [], Figures()
    for room in rooms:
        one = Figures(room_id=room.id, calendar_id=room.calendar_id, name=room.name, building=room.building,
                      floor=room.floor, capacity=room.capacity)
        for part in parts:
            if room.id in part:
                one.add(part[room.id])
        figures.append(one)
        total.add(one)
    total.capacity = sum(r.capacity or 0 for r in rooms) or None

    seconds = [[0.0] * 24 for _ in range(7)]
    if rooms:
        if room_ids is not None:  # the rollup is by building and floor, not by room
            live, rolled = [(start, end)], []
        for first, last in live:
            for grid in _held_by_hour(session, _live_where(first, last, ids)).values():
                _add_grid(seconds, grid)
        if rolled:
            _add_grid(seconds, _rolled_hours(session, rolled, building, floor))
    return Insights(start, end, figures, total, _occupancy(start, end, seconds, len(rooms)))


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


def _rolled_hours(session: Session, months: list[date], building: str | None, floor: str | None):
    query = sa.select(UsageHourMonth.weekday, UsageHourMonth.hour, sa.func.sum(UsageHourMonth.held_seconds)).where(
        UsageHourMonth.month.in_(months))
    if building:
        query = query.where(UsageHourMonth.building == building)
    if floor:
        query = query.where(UsageHourMonth.floor == floor)
    grid = _empty_grid()
    for wd, h, total in session.execute(query.group_by(UsageHourMonth.weekday, UsageHourMonth.hour)):
        grid[wd][h] += float(total or 0)
    return grid


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, OSError):
        return ZoneInfo("UTC")


# --- the monthly rollup -------------------------------------------------------------------------

ROLLUP_MONTHS_BACK = 13  # the rollup job fills in any whole month of the last year not summed yet
ROLLUP_REFRESH_RECENT = 2  # and sums the latest whole months again, for late changes (edits, syncs)


def refresh_month(session: Session, month: date) -> int:
    """Sum one whole month into the rollup, replacing what it held; the number of room rows."""
    month = month.replace(day=1)
    last = _next_month(month) - timedelta(days=1)
    in_scope = _room_query(None, None, None).with_only_columns(Room.id)
    with unit_of_work(session):
        _without_jit(session)
        session.execute(sa.delete(RoomUsageMonth).where(RoomUsageMonth.month == month))
        session.execute(sa.delete(UsageHourMonth).where(UsageHourMonth.month == month))
        session.execute(sa.delete(UsageRollup).where(UsageRollup.month == month))
        where = _live_where(month, last, in_scope)
        by_room = _live_figures(session, where)
        session.add_all(RoomUsageMonth(
            room_id=room_id, month=month, bookings=f.bookings, booked_seconds=f.booked_hours * 3600,
            checked_in_seconds=f.checked_in_hours * 3600, released_seconds=f.released_hours * 3600,
            ended_early_seconds=f.ended_early_hours * 3600, checked_in=f.checked_in, no_shows=f.no_shows,
            people=f.people, **{f"source_{s}": n for s, n in f.sources.items()},
        ) for room_id, f in by_room.items())
        session.add_all(UsageHourMonth(month=month, building=building, floor=floor, weekday=wd, hour=h,
                                       held_seconds=grid[wd][h])
                        for (building, floor), grid in _held_by_hour(session, where).items()
                        for wd in range(7) for h in range(24) if grid[wd][h])
        session.add(UsageRollup(month=month))
    return len(by_room)


def refresh_rollup(session: Session, today: date) -> list[date]:
    """Sum the latest whole months again, and any whole month of the last year not summed yet."""
    current = today.replace(day=1)
    months, month = [], current
    for _ in range(ROLLUP_MONTHS_BACK):
        month = (month - timedelta(days=1)).replace(day=1)
        months.append(month)
    done = rolled_months(session, months)
    due = [m for n, m in enumerate(months) if n < ROLLUP_REFRESH_RECENT or m not in done]
    for month in due:
        refresh_month(session, month)
    return due


def buildings(session: Session) -> list[str]:
    return list(session.scalars(sa.select(Room.building).where(Room.in_scope.is_(True), Room.building.is_not(None))
                                .distinct().order_by(Room.building)))


def floors(session: Session, building: str | None = None) -> list[str]:
    query = sa.select(Room.floor).where(Room.in_scope.is_(True), Room.floor.is_not(None))
    if building:
        query = query.where(Room.building == building)
    return list(session.scalars(query.distinct().order_by(Room.floor)))

"""Insights at scale: 10,000 rooms x a year of reservations on PostgreSQL, each query under a second.

The data is made inside PostgreSQL with generate_series (never the ORM): 10,000 rooms in
50 buildings of 10 floors; every weekday of a year, two bookings per room (30 min to 2 h,
morning and afternoon); 6 % cancelled, 12 % no-shows released, two thirds of the rest
checked in, a tenth of those ended early; sources and attendees spread evenly. The schema
is the app's own (migrated by Alembic), with its indexes; only the no-overlap exclusion
constraint is dropped before the load (the generated rows never overlap; the constraint
only slows the load and no insight query reads it).

Then `roombridge.insights.compute`, the very function behind the page, the CSV and
`GET /api/v1/insights`, is timed (median of 3, after one warm-up) for the ranges an admin
asks for, first all live, then after the rollup job's first run (every day of the last 13
months, then the whole months from their days), with "today" the last day of the data:
all rooms over the year, a month, 4 weeks and a ragged range; one building, one floor and
one room over the year. Target: each under 1 s.
"""

from __future__ import annotations

import statistics
import time
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from benchmarks.harness import Table, log, verdict

NAME = "insights"
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
DATABASE = "roombridge_bench_insights"
FIRST_DAY = date(2025, 1, 1)

ROOMS_SQL = """
INSERT INTO rooms (id, calendar_id, name, capacity, building, floor, features, time_zone, in_scope,
                   created_at, updated_at)
SELECT g, 'bench-' || g || '@resource.calendar.google.com', 'Room ' || g, (ARRAY[4, 6, 8, 12, 20])[1 + g % 5],
       'Building ' || (g % 50), ((g / 50) % 10)::text, '[]', 'Europe/London', true, now(), now()
FROM generate_series(1, :rooms) AS g
"""

# x is a cheap pseudo-random 0..99 per booking; the morning and afternoon slots are 4 h apart
# and last at most 2 h, so no two bookings of a room overlap.
RESERVATIONS_SQL = """
INSERT INTO reservations (room_id, organiser_email, title, description, start_at, end_at, all_day, attendees,
                          private, status, google_delete_failed, source, google_revision, version,
                          created_at, updated_at, checked_in_at, checked_in_by, missed_checkin_at, released_at,
                          release_reason, ended_early_at, original_end_at)
SELECT b.room_id, 'person' || ((b.room_id * 7 + b.d) % 5000) || '@example.com', 'Meeting', '',
       b.s,
       CASE WHEN b.early THEN b.e - interval '30 minutes' ELSE b.e END,
       false,
       (ARRAY['[]', '["a@example.com"]', '["a@example.com", "b@example.com"]',
              '["a@example.com", "b@example.com", "c@example.com"]'])[1 + b.x % 4]::json,
       false,
       CASE WHEN b.x < 6 THEN 'cancelled' WHEN b.x < 18 THEN 'released' ELSE 'confirmed' END,
       false,
       (ARRAY['web', 'api', 'google', 'display'])[1 + (b.x / 7) % 4],
       0, 1, b.s - interval '7 days', b.s - interval '7 days',  -- booked a week ahead, not changed since
       CASE WHEN b.checked THEN b.s END, CASE WHEN b.checked THEN 'person@example.com' END,
       CASE WHEN b.x >= 6 AND b.x < 18 THEN b.s + interval '15 minutes' END,
       CASE WHEN b.x >= 6 AND b.x < 18 THEN b.s + interval '15 minutes' END,
       CASE WHEN b.x >= 6 AND b.x < 18 THEN 'no_show' END,
       CASE WHEN b.early THEN b.e - interval '30 minutes' END,
       CASE WHEN b.early THEN b.e END
FROM (
  SELECT r AS room_id, d, x, s, s + (30 + 30 * (x % 4)) * interval '1 minute' AS e,
         x >= 18 AND x % 3 <> 0 AS checked, x >= 18 AND x % 3 <> 0 AND x % 10 = 1 AND x % 4 > 0 AS early
  FROM generate_series(1, :rooms) AS r,
       generate_series(0, :days - 1) AS d,
       generate_series(0, 1) AS k,
       LATERAL (SELECT (r * 31 + d * 17 + k * 53) % 100 AS x) AS rnd,
       LATERAL (SELECT (CAST(:first AS date) + d) + interval '8 hours' + k * interval '4 hours'
                       + (x % 3) * interval '30 minutes' AS s) AS slot
  WHERE extract(isodow FROM CAST(:first AS date) + d) < 6
) AS b
"""


def _admin() -> sa.Engine:
    return sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")


def load(rooms: int, days: int) -> sa.Engine:
    from roombridge import migrate
    from webapp import create_app

    admin = _admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {DATABASE}"))
    admin.dispose()
    url = f"{SERVER}/{DATABASE}"
    app = create_app(DATABASE_URL=url, ENV="development", AUTH_MODE="dev", SECRET_KEY="bench")
    migrate.upgrade(app)
    engine = sa.create_engine(url)
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE reservations DROP CONSTRAINT ex_reservations_no_overlap"))
        conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
        conn.execute(sa.text(ROOMS_SQL), {"rooms": rooms})
        conn.execute(sa.text(RESERVATIONS_SQL), {"rooms": rooms, "days": days, "first": FIRST_DAY})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE rooms"))
        conn.execute(sa.text("VACUUM ANALYZE reservations"))
    log(f"insights: loaded in {time.monotonic() - started:.0f} s")
    return engine


def timed(engine: sa.Engine, start: date, end: date, runs: int = 3, **filters) -> tuple[float, int, int]:
    """Median seconds of compute() over `runs` runs (after a warm-up when more than one); rooms, bookings."""
    from roombridge import insights

    times = []
    for attempt in range(runs + (runs > 1)):
        with Session(engine) as session:
            began = time.perf_counter()
            found = insights.compute(session, start, end, **filters)
            [figures.as_dict() for figures in found.rooms]  # what the API and the CSV then serialise
            if attempt or runs == 1:
                times.append(time.perf_counter() - began)
    return statistics.median(times), len(found.rooms), found.total.bookings


def run(quick: bool = False) -> list[Table]:
    rooms, days = (500, 90) if quick else (10_000, 365)  # whole months: Jan-Mar, or the year 2025
    engine = load(rooms, days)
    try:
        return measure(engine, rooms, days)
    finally:
        engine.dispose()
        admin = _admin()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        admin.dispose()


def measure(engine: sa.Engine, rooms: int, days: int) -> list[Table]:
    """The tables, on a loaded database (`load`). "Today" is the last day of the data."""
    from roombridge import insights

    with engine.connect() as conn:
        count = conn.scalar(sa.text("SELECT count(*) FROM reservations"))
        size = conn.scalar(sa.text("SELECT pg_size_pretty(pg_total_relation_size('reservations'))"))
    today = FIRST_DAY + timedelta(days=days - 1)
    headers = ["query", "rooms", "bookings counted", "seconds", "under 1 s"]

    live = Table(f"Insights read live from the reservations: {rooms:,} rooms, {count:,} reservations ({size})",
                 headers)
    cases = [
        # All rooms live is measured once: it is the case the rollup is for.
        ("all rooms, 4 weeks (1 run)", today - timedelta(days=27), today, 1, {}),
        ("one building, the whole range", FIRST_DAY, today, 3, {"building": "Building 7"}),
        ("one room, the whole range", FIRST_DAY, today, 3, {"room_ids": [4242 % rooms + 1]}),
    ]
    for label, start, end, runs, filters in cases:
        seconds, room_count, bookings = timed(engine, start, end, runs, today=today, rollup=False, **filters)
        log(f"insights (live): {label}: {seconds:.3f} s")
        live.add(label, room_count, bookings, seconds, verdict(seconds < 1.0))

    with Session(engine) as session:
        started = time.monotonic()
        first_days, first_months = insights.refresh_rollup(session, today)
        first_run = time.monotonic() - started
        started = time.monotonic()
        next_days, next_months = insights.refresh_rollup(session, today)
        next_run = time.monotonic() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("room_usage_days", "usage_hour_days", "usage_rollup_days", "room_usage_months",
                      "usage_hour_months", "room_usage_to_date"):
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))  # as autovacuum does after the first run's inserts
    log(f"insights: rollup's first run {first_run:.0f} s ({len(first_days)} days, {len(first_months)} months), "
        f"next run {next_run:.1f} s ({len(next_days)} days)")
    with engine.connect() as conn:
        day_rows = conn.scalar(sa.text("SELECT (SELECT count(*) FROM room_usage_days) "
                                       "+ (SELECT count(*) FROM usage_hour_days)"))
        month_rows = conn.scalar(sa.text("SELECT (SELECT count(*) FROM room_usage_months) "
                                         "+ (SELECT count(*) FROM usage_hour_months)"))
        to_date_rows = conn.scalar(sa.text("SELECT count(*) FROM room_usage_to_date"))

    rolled = Table(f"Insights with the daily and monthly rollup (the job's first run {first_run:.0f} s for "
                   f"{len(first_days)} days and {len(first_months)} months, an hourly run {next_run:.1f} s; "
                   f"{day_rows:,} day rows, {month_rows:,} month rows, {to_date_rows:,} running-sum rows)", headers)
    last_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    cases = [
        ("all rooms, the whole range to today", FIRST_DAY, today, 3, {}),
        ("all rooms, the last whole month", last_month, today.replace(day=1) - timedelta(days=1), 3, {}),
        ("all rooms, the last 4 weeks to today", today - timedelta(days=27), today, 3, {}),
        ("all rooms, ragged ends (15th to 14th)", FIRST_DAY + timedelta(days=14), today - timedelta(days=17), 3, {}),
        ("all rooms, inside one month (10th to 20th)", last_month + timedelta(days=9), last_month + timedelta(days=19),
         3, {}),
        ("one building, the whole range", FIRST_DAY, today, 3, {"building": "Building 7"}),
        ("one floor of one building, the whole range", FIRST_DAY, today, 3, {"building": "Building 7", "floor": "3"}),
        ("one room, the whole range (heatmap live)", FIRST_DAY, today, 3, {"room_ids": [4242 % rooms + 1]}),
    ]
    for label, start, end, runs, filters in cases:
        seconds, room_count, bookings = timed(engine, start, end, runs, today=today, **filters)
        log(f"insights (rollup): {label}: {seconds:.3f} s")
        rolled.add(label, room_count, bookings, seconds, verdict(seconds < 1.0))
    rolled.notes.append("seconds: the median of 3 runs after a warm-up, serialising every room as the API does. "
                        "compute() reads whole months from the monthly rows, the other days before today from the "
                        "running sums (two rows per room and month part), and only today live; rooms, figures and "
                        "the total in ONE query.")
    return [live, rolled]

"""The Google call log at 10,000 rooms: what recording costs a call, what flushing, reading and purging cost.

Google's quota caps the whole product at 600 calls a minute, about 860,000 rows a day. Measured:

1. The hot path: `CallLog.record` (one Lua RPUSH on Redis) per call, p50/p99, with Redis up and
   with nothing listening (the log-and-drop path); and a real gateway call (events.get over HTTP
   to the emulator, through google-api-python-client) with the log on and off, alternated.
2. The flush: 100,000 buffered records moved to PostgreSQL (then SQLite) by `call_log.flush`,
   5,000 a batch: rows/s, and the time of one batch's transaction.
3. Reading and purging at scale on PostgreSQL: 10,000 rooms and BENCH_CALLLOG_DAYS days
   (default 2) of 860,000 calls a day, made with generate_series in the app's own migrated
   schema and indexes. Timed (median of 3 after a warm-up): one room's page (newest 50, and
   filtered), the summary over 1 hour, 24 hours and everything; then one purge batch of 5,000
   rows and a whole purge of the oldest day.

Targets: recording adds < 1 ms to a call (p99); a flush keeps up with 100x Google's quota;
a room's page < 50 ms; the 24-hour summary < 2 s; a purge batch < 1 s.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from redis import Redis
from sqlalchemy.orm import Session

from benchmarks.harness import (
    POSTGRES_SERVER,
    REDIS_URL,
    Table,
    free_port,
    fresh_postgres,
    log,
    percentile,
    verdict,
    wait_until,
)

NAME = "calllog"
DATABASE = os.environ.get("BENCH_CALLLOG_DB", "roombridge_bench_calllog")
ROOMS = 10_000
CALLS_PER_DAY = 600 * 60 * 24  # Google's per-user quota, every minute of the day

# A day's calls spread evenly over `rooms` rooms: every kind and a few outcomes, as a quota-bound day has them.
CALLS_SQL = """
INSERT INTO google_calls (at, room_id, calendar_id, operation, kind, outcome, status, duration_ms)
SELECT CAST(:newest AS timestamptz) - (g * CAST(:step AS float8)) * interval '1 second',
       1 + g % :rooms, NULL,
       (ARRAY['events.list', 'events.list', 'events.list', 'events.insert', 'events.patch', 'events.watch',
              'channels.stop', 'events.delete'])[1 + (g / :rooms) % 8],
       (ARRAY['sweep', 'sync', 'sync', 'write', 'write', 'renewal', 'renewal', 'write'])[1 + (g / :rooms) % 8],
       CASE WHEN g % 997 = 0 THEN 'rate_limited' WHEN g % 101 = 0 THEN 'not_found' ELSE 'ok' END,
       CASE WHEN g % 997 = 0 THEN 429 WHEN g % 101 = 0 THEN 404 ELSE 200 END,
       20 + g % 180
FROM generate_series(0, :count - 1) AS g
"""


def _app(url: str, **overrides):
    from webapp import create_app

    return create_app(DATABASE_URL=url, REDIS_URL=REDIS_URL, ENV="development", AUTH_MODE="dev", SECRET_KEY="bench",
                      **overrides)


def _drop_postgres() -> None:
    admin = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
    admin.dispose()


def _record(at: float, n: int):
    from roombridge.call_log import CallRecord

    return CallRecord(at, f"bench-{1 + n % ROOMS}@resource.calendar.google.com", "events.list", "sweep", "ok", 200,
                      40)


# --- 1. the hot path ------------------------------------------------------------------------------


def hot_path(quick: bool) -> Table:
    from roombridge.call_log import BUFFER_KEY, CallLog

    table = Table("Recording one call (the gateway's only added work): microseconds",
                  ["what", "calls", "p50 µs", "p99 µs", "max µs", "p99 < 1 ms"])
    count = 2_000 if quick else 20_000
    for label, url in (("Redis up (Lua RPUSH)", REDIS_URL),
                       ("Redis down (refused; logged once a minute, dropped, counted)",
                        f"redis://127.0.0.1:{free_port()}/0")):
        conn = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        if url == REDIS_URL:
            conn.flushdb()
        call_log = CallLog(conn)
        times = []
        now = time.time()
        for n in range(count if url == REDIS_URL else count // 10):
            began = time.perf_counter()
            call_log.record(_record(now, n))
            times.append((time.perf_counter() - began) * 1e6)
        p99 = percentile(times, 99)
        table.add(label, len(times), percentile(times, 50), p99, max(times), verdict(p99 < 1000))
        log(f"calllog: record, {label}: p50 {percentile(times, 50):.0f} µs p99 {p99:.0f} µs")
        if url == REDIS_URL:
            conn.delete(BUFFER_KEY)
        conn.close()
    table.notes.append("A Calendar call to Google itself takes 50-300 ms; the record is taken after the answer.")
    return table


def gateway_calls(quick: bool) -> Table:
    """events.get over HTTP to the emulator (a process of its own, as Google is), alternating the log on and off."""
    import subprocess
    import sys

    from emulator import DEMO_ROOMS
    from roombridge import db, migrate
    from roombridge.call_log import BUFFER_KEY
    from roombridge.gcal import CalendarGateway, event_id_for
    from roombridge.models import Room

    port = free_port()
    calendar = DEMO_ROOMS[0]["email"]
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "key.json")
        emulator = subprocess.Popen([sys.executable, "-m", "emulator", "--port", str(port), "--seed", "demo",
                                     "--key-out", key], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: os.path.exists(key) and _listening(port), 30, "the emulator")
            app = _app(f"sqlite:///{tmp}/bench.sqlite3", GOOGLE_SERVICE_ACCOUNT_FILE=key,
                       GOOGLE_CALENDAR_API_URL=f"http://127.0.0.1:{port}/calendar/v3/",
                       GOOGLE_CALLS_PER_MINUTE=1_000_000)
            migrate.upgrade(app)
            with app.app_context():
                db.session().add(Room(calendar_id=calendar, name="Bench", time_zone="UTC"))
                db.session().commit()
                logged = CalendarGateway.for_app(kind="write")
                bare = CalendarGateway.for_app(kind="write")
                bare.call_log = None
                # Inside the call's path, also time the record and the budget's own Redis call.
                recording, budgeting = _timing(logged.call_log, "record"), _timing(logged.budget, "acquire")
                event = logged.insert_event(calendar, event_id_for(1), {
                    "summary": "x", "start": {"dateTime": "2030-01-07T10:00:00Z"},
                    "end": {"dateTime": "2030-01-07T11:00:00Z"}})
                times: dict[str, list[float]] = {"log on": [], "log off": []}
                rounds = 100 if quick else 500
                for n in range(rounds * 2):
                    label, gateway = (("log on", logged) if n % 2 else ("log off", bare))
                    began = time.perf_counter()
                    gateway.get_event(calendar, event["id"])
                    times[label].append((time.perf_counter() - began) * 1000)
                Redis.from_url(REDIS_URL).delete(BUFFER_KEY)
            db.engine(app).dispose()
        finally:
            emulator.terminate()
            emulator.wait(10)
    table = Table("A real gateway call (events.get over HTTP to the emulator's own process), the log on and off: ms",
                  ["what", "calls", "p50 ms", "p99 ms", "mean ms"])
    for label, values in times.items():
        table.add(f"the whole call, log {label.split()[-1]}", len(values), percentile(values, 50),
                  percentile(values, 99), statistics.fmean(values))
    for label, values in (("inside it: the record (log on)", recording), ("inside it: the budget's token (log on)",
                                                                           budgeting)):
        table.add(label, len(values), percentile(values, 50), percentile(values, 99), statistics.fmean(values))
    on, off = statistics.fmean(times["log on"]), statistics.fmean(times["log off"])
    log(f"calllog: gateway call mean {on:.2f} ms with the log, {off:.2f} ms without")
    table.notes.append(f"difference of the means: {on - off:+.2f} ms, against the emulator in a process of its "
                       "own on this machine; the budget's own Redis call is in both.")
    return table


def _timing(target, method: str) -> list[float]:
    """Time every call of target.method (ms) from now on, into the list returned."""
    spent: list[float] = []
    original = getattr(target, method)

    def timed(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append((time.perf_counter() - began) * 1000)

    setattr(target, method, timed)
    return spent


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# --- 2. the flush ------------------------------------------------------------------------------------


def flushing(quick: bool) -> Table:
    from roombridge import call_log, db, migrate
    from roombridge.call_log import BUFFER_KEY
    from roombridge.models import GoogleCall

    table = Table("Flushing the buffer to the table (5,000 rows a batch, one transaction each)",
                  ["database", "records", "seconds", "rows/s", "ms a batch", "x Google's quota (10/s)"])
    count = 10_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in (("PostgreSQL", fresh_postgres(DATABASE)), ("SQLite", f"sqlite:///{tmp}/bench.sqlite3")):
            app = _app(url)
            migrate.upgrade(app)
            conn = Redis.from_url(REDIS_URL)
            conn.delete(BUFFER_KEY)
            with app.app_context():
                session = db.session()
                engine = db.engine()
                with engine.begin() as c:
                    c.execute(sa.insert(_rooms_table()), [
                        {"calendar_id": f"bench-{n}@resource.calendar.google.com", "name": f"Room {n}",
                         "features": [], "time_zone": "UTC", "in_scope": True,
                         "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)}
                        for n in range(1, ROOMS + 1)])
                now = time.time()
                pipe = conn.pipeline(transaction=False)
                for n in range(count):
                    pipe.rpush(BUFFER_KEY, _record(now - n * 0.1, n).encode())
                pipe.execute()
                began = time.perf_counter()
                written = 0
                while conn.llen(BUFFER_KEY):
                    written += call_log.flush(session, conn)
                seconds = time.perf_counter() - began
                stored = session.scalar(sa.select(sa.func.count()).select_from(GoogleCall))
                assert stored == written == count, (stored, written, count)
            db.engine(app).dispose()
            rate = written / seconds
            table.add(name, written, seconds, rate, seconds / (written / call_log.FLUSH_BATCH) * 1000,
                      verdict(rate / 10 >= 100))
            log(f"calllog: flush to {name}: {rate:,.0f} rows/s")
    _drop_postgres()
    table.notes.append("Each batch: LRANGE, one SELECT of its rooms' ids, one multi-row INSERT, COMMIT, LTRIM.")
    return table


def _rooms_table():
    from roombridge.models import Room

    return Room.__table__


# --- 3. reading and purging at 10,000 rooms ------------------------------------------------------------


def _median(fn, runs: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def at_scale(quick: bool) -> list[Table]:
    from roombridge import call_log, migrate

    days = int(os.environ.get("BENCH_CALLLOG_DAYS", "2"))
    rooms, per_day = (1_000, 86_400) if quick else (ROOMS, CALLS_PER_DAY)
    url = fresh_postgres(DATABASE)
    migrate.upgrade(_app(url))
    engine = sa.create_engine(url)
    newest = datetime.now(UTC)
    count = per_day * days
    began = time.monotonic()
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
        conn.execute(sa.text(
            "INSERT INTO rooms (id, calendar_id, name, features, time_zone, in_scope, created_at, updated_at) "
            "SELECT g, 'bench-' || g || '@resource.calendar.google.com', 'Room ' || g, '[]', 'UTC', true, now(), "
            "now() FROM generate_series(1, :rooms) AS g"), {"rooms": rooms})
        conn.execute(sa.text(CALLS_SQL), {"newest": newest, "step": 86_400 / per_day, "rooms": rooms,
                                          "count": count})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE google_calls"))
        size = conn.scalar(sa.text("SELECT pg_size_pretty(pg_total_relation_size('google_calls'))"))
    log(f"calllog: {count:,} calls loaded in {time.monotonic() - began:.0f} s ({size})")

    reads = Table(f"Reading the log on PostgreSQL: {rooms:,} rooms, {count:,} calls over {days} day(s) ({size})",
                  ["query", "rows", "seconds (median of 3)", "target", "met"])
    room = 4242 % rooms + 1
    try:
        with Session(engine) as session:
            cases = [
                ("one room: newest 50", lambda: call_log.room_calls(session, room).calls, 0.05),
                ("one room: page 3", lambda: call_log.room_calls(session, room, page=3).calls, 0.05),
                ("one room: kind=renewal, outcome=not_found",
                 lambda: call_log.room_calls(session, room, kind="renewal", outcome="not_found").calls, 0.05),
                ("summary: the last hour", lambda: call_log.summary(session, newest - timedelta(hours=1)), 2.0),
                ("summary: the last 24 hours", lambda: call_log.summary(session, newest - timedelta(hours=24)), 2.0),
                (f"summary: everything ({days} days)",
                 lambda: call_log.summary(session, newest - timedelta(days=days + 1)), 2.0 * days),
            ]
            for label, fn, target in cases:
                seconds = _median(fn)
                found = fn()
                rows = found.total if hasattr(found, "total") else len(found)
                reads.add(label, rows, seconds, f"< {target:g} s", verdict(seconds < target))
                log(f"calllog: {label}: {seconds:.3f} s")
                session.rollback()

        purge = Table("Retention on PostgreSQL: deleting the oldest day in batches of 5,000",
                      ["what", "rows deleted", "seconds", "rows/s", "target", "met"])
        retention = max(days - 1, 1)  # keep the newest day(s): the oldest day is due
        with Session(engine) as session:
            began = time.perf_counter()
            one = call_log.purge(session, newest, retention, max_batches=1)
            batch_seconds = time.perf_counter() - began
            purge.add("one batch", one, batch_seconds, one / batch_seconds, "< 1 s", verdict(batch_seconds < 1.0))
            began = time.perf_counter()
            rest = call_log.purge(session, newest, retention, max_batches=10_000)
            seconds = time.perf_counter() - began
            purge.add(f"the rest of what is due (retention {retention} day(s))", rest, seconds,
                      rest / seconds if seconds else 0, "-", "-")
            log(f"calllog: purge {one + rest:,} rows in {batch_seconds + seconds:.1f} s")
        purge.notes.append(f"In service the job runs every tick (30 s) and finds about {per_day // 2880:,} rows "
                           "due: one short batch.")
    finally:
        engine.dispose()
        _drop_postgres()
    return [reads, purge]


def run(quick: bool = False) -> list[Table]:
    return [hot_path(quick), gateway_calls(quick), flushing(quick), *at_scale(quick)]

"""Booking under load: concurrent API clients booking random slots on 50 rooms, per database.

gunicorn with the Procfile's web command serves the app; CLIENTS threads, each with its own
keep-alive connection and a token made by `flask --app wsgi tokens create`, POST
/api/v1/reservations with random slots (inside the bookable hours, the next two weeks, 30 to
90 minutes) for SECONDS seconds. Clashes are expected and answered 409. Afterwards a SQL
self-join counts live reservations of one room that overlap: it must be zero. SQLite and
PostgreSQL run one after the other in the same run. No worker runs: each booking's Google
write is queued in Redis and stays there (it is not what is measured).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from benchmarks.harness import Stack, Table, log, percentile, verdict

NAME = "booking"
ROOMS = 50
CLIENTS = 16
OVERLAPS = sa.text("""
    SELECT count(*) FROM reservations a JOIN reservations b
      ON a.room_id = b.room_id AND a.id < b.id AND a.start_at < b.end_at AND b.start_at < a.end_at
     WHERE a.status IN ('pending', 'confirmed', 'failed') AND b.status IN ('pending', 'confirmed', 'failed')
""")


def load(port: int, tokens: list[str], room_ids: list[int], seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    first_day = datetime.now(UTC).date() + timedelta(days=1)

    def client(n: int) -> None:
        rng = random.Random(n)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}", "Content-Type": "application/json"}
        while time.monotonic() < deadline:
            day = first_day + timedelta(days=rng.randrange(14))
            start = datetime(day.year, day.month, day.day, 7, tzinfo=UTC) + timedelta(minutes=30 * rng.randrange(24))
            end = start + timedelta(minutes=30 * rng.randint(1, 3))
            end = min(end, datetime(day.year, day.month, day.day, 20, tzinfo=UTC))
            body = json.dumps({"room_id": rng.choice(room_ids), "title": f"load {n}",
                               "start": start.isoformat(), "end": end.isoformat()})
            sent = time.perf_counter()
            conn.request("POST", "/api/v1/reservations", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            took = (time.perf_counter() - sent) * 1000
            with lock:
                latencies.append(took)
                statuses[response.status] = statuses.get(response.status, 0) + 1
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "statuses": statuses}


def run(quick: bool) -> list[Table]:
    from roombridge import db

    seconds = 5 if quick else 60
    table = Table(f"Booking under load: {CLIENTS} API clients, {ROOMS} rooms, {seconds} s per database (gunicorn)",
                  ["database", "requests", "req/s", "p50 ms", "p99 ms", "201 booked", "409 clash", "other",
                   "overlaps"])
    overlaps_total = 0
    for database in ("sqlite", "postgresql"):
        with Stack(database, emulator=False) as stack:
            room_ids = stack.add_rooms(ROOMS)
            tokens = [stack.api_token(f"user{n}@example.com") for n in range(4)]
            stack.start_web()
            log(f"booking: {CLIENTS} clients on {database} for {seconds} s")
            result = load(stack.web_port, tokens, room_ids, seconds)
            with db.engine(stack.app).connect() as conn:
                overlaps = conn.execute(OVERLAPS).scalar_one()
                stored = conn.execute(sa.text("SELECT count(*) FROM reservations")).scalar_one()
            statuses = result["statuses"]
            assert stored == statuses.get(201, 0), (stored, statuses)
            overlaps_total += overlaps
            other = {s: c for s, c in statuses.items() if s not in (201, 409)}
            table.add(database, result["requests"], result["rps"], result["p50"], result["p99"],
                      statuses.get(201, 0), statuses.get(409, 0), json.dumps(other) if other else 0, overlaps)
    table.notes.append(f"overlapping live reservations (SQL self-join): {overlaps_total} "
                       f"[target 0: {verdict(overlaps_total == 0)}]; every 201 is one stored row")
    return [table]

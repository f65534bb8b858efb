"""Full sync of one room with N events: time and peak memory, 1k / 5k / 10k side by side.

The emulator runs in this process, its room calendar seeded through the Python state API
(N one-off bookings, written straight onto the room calendar, spread over the sync window).
The sync itself runs in a child process holding only the app, so that its memory figures
are the app's alone: the real engine, `roombridge.sync.sync_room_now(..., full=True)`,
paging events.list over HTTP (250 a page) and writing PostgreSQL. Each size is synced twice
from scratch: once timed, once under tracemalloc for the peak of Python allocations.

Target: memory does not grow with the number of events beyond one page.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from benchmarks.harness import ROOT, Stack, Table, log, verdict

NAME = "fullsync"
PER_DAY = 28


def seed(stack: Stack, calendar_id: str, count: int) -> None:
    state = stack.emulator.state
    first = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0) + timedelta(days=1)
    for n in range(count):
        start = first + timedelta(days=n // PER_DAY, minutes=30 * (n % PER_DAY))
        state.insert_as(calendar_id, "bob@example.com", {
            "summary": f"Meeting {n}",
            "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": (start + timedelta(minutes=25)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })


def _child(room_id: int, traced: bool) -> None:
    """In the child: one full sync of the room; prints a JSON line of figures."""
    from google.auth.transport.requests import Request

    from roombridge import db
    from roombridge.gcal import CalendarGateway
    from roombridge.models import Room
    from roombridge.sync import sync_room_now
    from webapp import create_app

    app = create_app()
    with app.app_context():
        session = db.session()
        room = session.get(Room, room_id)
        gateway = CalendarGateway.for_app(app, kind="sync")
        gateway.credentials.refresh(Request())  # the token grant is not part of the sync's time
        if traced:
            tracemalloc.start()
        started = time.perf_counter()
        report = sync_room_now(session, gateway, room, app.config["ROOMBRIDGE"], full=True)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if traced else None
    print(json.dumps({"seconds": elapsed, "peak": peak, "events": report.events, "pages": report.pages,
                      "changes": report.changes,
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def _sync_in_child(stack: Stack, room_id: int, traced: bool) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.full_sync", str(room_id), "traced" if traced else "timed"],
                         cwd=ROOT, env=stack.env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"sync child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _forget(stack: Stack, room_id: int) -> None:
    """Back to a room never synced: the next sync is a first full sync again."""
    import sqlalchemy as sa

    from roombridge import db

    with stack.app.app_context():
        session = db.session()
        session.execute(sa.text("DELETE FROM audit_log"))
        session.execute(sa.text("DELETE FROM reservations WHERE room_id = :r"), {"r": room_id})
        session.execute(sa.text("DELETE FROM room_sync_states WHERE room_id = :r"), {"r": room_id})
        session.commit()


def run(quick: bool) -> list[Table]:
    sizes = (250, 1000, 2500) if quick else (1000, 5000, 10000)
    table = Table("Full sync of one room: roombridge.sync.sync_room_now(full=True), events.list over HTTP, PostgreSQL",
                  ["events", "pages", "time s", "events / s", "tracemalloc peak MiB", "KiB / event",
                   "child max RSS MiB"])
    peaks = []
    with Stack("postgresql", pushes=False, SYNC_WINDOW_DAYS_AHEAD=max(400, sizes[-1] // PER_DAY + 10)) as stack:
        for size in sizes:
            log(f"fullsync: seeding {size} events")
            room_id = stack.add_rooms(1, prefix=f"full{size}")[0]
            from roombridge import db
            from roombridge.models import Room

            with stack.app.app_context():
                calendar_id = db.session().get(Room, room_id).calendar_id
            seed(stack, calendar_id, size)
            log(f"fullsync: syncing {size} events (timed, then traced)")
            timed = _sync_in_child(stack, room_id, traced=False)
            assert timed["events"] == size and timed["changes"] == size, timed
            _forget(stack, room_id)
            traced = _sync_in_child(stack, room_id, traced=True)
            peaks.append(traced["peak"])
            table.add(size, timed["pages"], timed["seconds"], size / timed["seconds"], traced["peak"] / 2**20,
                      traced["peak"] / size / 1024, timed["maxrss"] / 2**20)
            _forget(stack, room_id)
    growth = peaks[-1] / peaks[0]
    table.notes += [
        f"peak at {sizes[-1]:,} events / at {sizes[0]:,} = {growth:.1f}x for {sizes[-1] / sizes[0]:.0f}x the events "
        f"[target: no growth beyond one page: {verdict(growth < 1.5)}]",
        "tracemalloc counts Python allocations of the sync alone (emulator in another process); "
        "max RSS is the whole child process (interpreter and libraries included)",
    ]
    return [table]


if __name__ == "__main__":
    _child(int(sys.argv[1]), sys.argv[2] == "traced")
    os._exit(0)

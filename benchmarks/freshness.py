"""Freshness: from a booking made in Google (the emulator) to the reservation visible in our API.

The whole push path runs for real: the emulator POSTs the notification to gunicorn (the
Procfile's web command), the webhook requests a sync in Redis, ONE RQ worker (`flask --app
wsgi worker`) lists the room's changes from the emulator over HTTP and commits them, and a
client polls `GET /api/v1/reservations` every POLL seconds. CHANGES bookings are spread
over ROOMS rooms in shuffled rounds, one every GAP seconds, so each room changes about every
ROOMS * GAP seconds (the production pacing SYNC_MIN_INTERVAL_SECONDS = 1 s applies).
The emulator's own push delay is 0 here: the figures are all ours.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta

from benchmarks.harness import Stack, Table, is_first_page, is_list_call, log, percentile, verdict, wait_until

NAME = "freshness"
POLL = 0.02
GAP = 0.1


def _api_titles(url: str, token: str) -> set[str]:
    headers = {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(f"{url}/api/v1/reservations", headers=headers)  # noqa: S310 (loopback only)
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback only)
        return {r["title"] for r in json.load(answer)["reservations"]}


def warm_stack(stack: Stack, rooms: int) -> tuple[list[str], str]:
    """Rooms with live channels, one full sync each done by the worker; returns (calendars, token)."""
    from roombridge import db
    from roombridge.models import Room, RoomSyncState

    room_ids = stack.add_rooms(rooms)
    stack.start_web()
    stack.start_worker()
    stack.open_channels(room_ids)  # the "sync" handshakes arrive at the web process
    with stack.app.app_context():
        from roombridge.notifications import request_sync

        for room_id in room_ids:
            request_sync(room_id, full=True)
        calendars = [db.session().get(Room, r).calendar_id for r in room_ids]

    def all_synced() -> bool:
        with stack.app.app_context():
            return db.session().query(RoomSyncState).filter(RoomSyncState.sync_token.is_not(None)).count() == rooms

    wait_until(all_synced, 60, "the first sync of every room")
    return calendars, stack.api_token()


def make_changes(stack: Stack, calendars: list[str], count: int, gap: float, prefix: str,
                 on_made=None, days_ahead: int = 2) -> list[str]:
    """`count` bookings by a person in Google, spread over the rooms in shuffled rounds."""
    rng = random.Random(8)
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=days_ahead)
    order: list[str] = []
    while len(order) < count:
        round_ = list(calendars)
        rng.shuffle(round_)
        order.extend(round_)
    titles = []
    for n, calendar in enumerate(order[:count]):
        title = f"{prefix}-{n}"
        start = base + timedelta(hours=n // len(calendars) % 200, days=n // (len(calendars) * 200))
        stack.emulator.state.book("bob@example.com", calendar, title, start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                  (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        if on_made:
            on_made(title, time.monotonic())
        titles.append(title)
        time.sleep(gap)
    return titles


def run(quick: bool) -> list[Table]:
    rooms, count = (5, 20) if quick else (20, 200)
    with Stack("postgresql") as stack:
        calendars, token = warm_stack(stack, rooms)
        made: dict[str, float] = {}
        seen: dict[str, float] = {}
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                now = time.monotonic()
                for title in _api_titles(stack.web_url, token):
                    seen.setdefault(title, now)
                time.sleep(POLL)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        calls_before = stack.log_mark()
        log(f"freshness: {count} bookings over {rooms} rooms, one every {GAP} s")
        titles = make_changes(stack, calendars, count, GAP, "fresh", on_made=made.__setitem__)
        try:
            wait_until(lambda: all(t in seen for t in titles), 60, "every booking to show in the API")
        finally:
            stop.set()
            poller.join(5)
        calls = stack.calendar_calls(since=calls_before)

    delays = [seen[t] - made[t] for t in titles]
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    table = Table("Freshness: change in Google -> visible in GET /api/v1/reservations (1 worker)",
                  ["changes", "rooms", "p50 s", "p90 s", "p99 s", "max s", "syncs", "list calls"])
    table.add(count, rooms, p50, percentile(delays, 90), p99, max(delays),
              sum(1 for c in calls if is_first_page(c)), sum(1 for c in calls if is_list_call(c)))
    table.notes += [
        f"p50 {p50:.2f} s [target < 0.5 s: {verdict(p50 < 0.5)}], p99 {p99:.2f} s [target < 2 s: {verdict(p99 < 2)}]",
        f"emulator push delay 0 s; API polled every {POLL * 1000:.0f} ms (adds up to that much); "
        f"a booking every {GAP} s, each room about every {GAP * rooms:.1f} s",
    ]
    return [table]

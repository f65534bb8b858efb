"""Renewal at scale: the real renewal pass (roombridge.channels.renew_due) over N rooms.

The emulator runs in this process (seeded through its Python state API, push delivery
off: notifications are not what is measured), the app's calls go to it over HTTP through
the gateway, on PostgreSQL. Per size, a fresh stack:

1. first pass: every room gets its first channel (1 watch call each);
2. idle pass: nothing is due (what the periodic job costs on most ticks);
3. renewal pass with `now` past every channel's renewal moment: every channel replaced
   (watch the new one, stop the old one: 2 calls per channel);

then the spread: each channel's own renewal moment (hash of its id inside its window) is
bucketed by minute, for the peak calls per minute that the periodic job meets when all
channels were made in the same minute, beside the same work unspread.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

from benchmarks.harness import Stack, Table, log, verdict

NAME = "renewal"


def _pass(stack: Stack, now) -> tuple[float, int, object]:
    from roombridge import channels, db
    from roombridge.gcal import CalendarGateway

    since = stack.log_mark()
    with stack.app.app_context():
        gateway = CalendarGateway.for_app(stack.app, kind="renewal")
        started = time.perf_counter()
        report = channels.renew_due(db.session(), gateway, stack.app.config["ROOMBRIDGE"], now)
        elapsed = time.perf_counter() - started
    return elapsed, len(stack.calendar_calls(since=since)), report


def run(quick: bool) -> list[Table]:
    from roombridge import channels, db
    from roombridge.db import utcnow
    from roombridge.models import WatchChannel

    sizes = (50, 100, 200) if quick else (1250, 2500, 5000)
    table = Table("Renewal at scale: roombridge.channels.renew_due against the emulator over HTTP (PostgreSQL)",
                  ["rooms", "first pass s", "idle pass s", "renew all s", "ms / channel", "calls",
                   "calls / channel", "renewed"])
    spread = Table("Renewal spread: channels made in one minute, calls per minute when each renews at its moment",
                   ["rooms", "window h", "mean calls / min", "peak calls / min (spread)", "peak / mean",
                    "calls in one minute if unspread"])
    per_channel = []
    for size in sizes:
        with Stack("postgresql", pushes=False) as stack:
            log(f"renewal: {size} rooms")
            stack.add_rooms(size)
            config = stack.app.config["ROOMBRIDGE"]
            now = utcnow()
            first_s, _first_calls, first = _pass(stack, now)
            idle_s, idle_calls, _ = _pass(stack, now + timedelta(seconds=config.SCHEDULER_TICK_SECONDS))
            with stack.app.app_context():
                live = list(db.session().query(WatchChannel).filter(WatchChannel.stopped_at.is_(None)))
                moments = [channels.renewal_moment(c, config) for c in live]
            later = max(moments) + timedelta(seconds=1)
            renew_s, renew_calls, report = _pass(stack, later)
            assert len(first.created) == size and idle_calls == 0, (len(first.created), idle_calls)
            per_channel.append(renew_s / size)
            table.add(size, first_s, idle_s, renew_s, renew_s / size * 1000, renew_calls, renew_calls / size,
                      len(report.replaced))
            earliest, latest = channels.renewal_window(live[0], config)
            by_minute = Counter(int(m.timestamp() // 60) for m in moments)
            window_min = (latest - earliest).total_seconds() / 60
            spread.add(size, (latest - earliest).total_seconds() / 3600, 2 * size / window_min,
                       2 * max(by_minute.values()), max(by_minute.values()) * window_min / size, 2 * size)
    growth = per_channel[-1] / per_channel[0]
    table.notes += [
        f"calls per channel on renewal [target 2: {verdict(all(r[6] == 2 for r in table.rows))}]",
        f"time per channel at {sizes[-1]} rooms / at {sizes[0]} rooms = {growth:.2f} "
        f"[linear means ~1: {verdict(growth < 1.5)}]",
        "the idle pass is what the periodic job (every SCHEDULER_TICK_SECONDS) costs when nothing is due",
        "'renew all' is the worst case (every channel due at once, e.g. after a day with no scheduler)",
    ]
    spread.notes.append("peak bounded by the spread: the hash spreads renewal moments evenly over the window, "
                        "so the peak stays a small multiple of the mean instead of every call in one minute")
    return [table, spread]

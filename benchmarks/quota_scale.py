"""Scale inside Google's quota (issue #15): many rooms, 4 workers, the emulator enforcing the quota.

One stack on PostgreSQL; the emulator (in this process) enforces Google's per-user (600) and
per-project (10,000) sliding-minute quotas; gunicorn serves the webhook and the API; N worker
processes (`flask --app wsgi worker`) and the scheduler run as the Procfile runs them, with
GOOGLE_CALLS_PER_MINUTE=500.

1. First add: every room is in scope in the database and shared in the emulator, with no
   channel and never synced; the running system opens every channel (the renewal pass) and
   first-syncs every room (the rolling safety net), both paced by the budget.
2. Peak (the new design): for M minutes of real time, Google changes at 10 per room per day
   over 8 hours (rooms / 48 a minute) made in the emulator (each pushed to the webhook),
   30 bookings a minute through the API, channels coming due (CHANNEL_TTL_SECONDS short, so
   their renewal windows fall inside the run) and the safety net running.
3. Today's design on the same load: the workers restarted with the budget out of the way
   (GOOGLE_CALLS_PER_MINUTE=1,000,000) and the old safety net (every room's sync enqueued at
   once, every SAFETY_SYNC_INTERVAL_SECONDS, here once at the start of the phase).

Per minute: calls by kind (the budget's counters), the most calls Google saw in any sliding
60 s (the emulator's request log), rate-limit answers, booking confirm latency (POST answered
-> the reservation confirmed in PostgreSQL, polled every 0.2 s), push-to-reservation latency
(change made in the emulator -> its reservation in PostgreSQL) and the sweep's cycle time (the
stalest room's time since its last sync).

Sizes: BENCH_QUOTA_ROOMS (10,000), BENCH_QUOTA_MINUTES (10), BENCH_QUOTA_OLD_MINUTES (5),
BENCH_QUOTA_WORKERS (4), BENCH_QUOTA_MAX_AGE (SAFETY_SYNC_MAX_AGE_SECONDS: 3,600 at 10,000
rooms; rooms * 60 / 150 s, at least 900, below). `--quick`: 200 rooms, 2 + 1 minutes.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from benchmarks.harness import BIN, Stack, Table, log, percentile, verdict

NAME = "quota"
BUDGET = 500


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


class Load:
    """Google changes and API bookings at fixed rates, and a poller that sees them land in PostgreSQL."""

    def __init__(self, stack: Stack, token: str, calendars: list[str], room_ids: list[int], changes_per_minute: float,
                 bookings_per_minute: float):
        self.stack, self.token, self.calendars, self.room_ids = stack, token, calendars, room_ids
        self.changes_gap, self.bookings_gap = 60 / changes_per_minute, 60 / bookings_per_minute
        self.made: dict[str, float] = {}  # change title -> when made
        self.seen: dict[str, float] = {}
        self.sent: dict[int, float] = {}  # reservation id -> when the POST was sent
        self.confirmed: dict[int, float] = {}
        self.statuses: Counter = Counter()
        self.stop = threading.Event()
        self.engine = sa.create_engine(stack.database_url, pool_size=2)
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._changes, self._bookings, self._poll)]
        self._n = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)
        self.engine.dispose()

    def _changes(self) -> None:
        rng = random.Random(15)
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=3)
        next_at = time.monotonic()
        while not self.stop.is_set():
            self._n += 1
            title = f"chg-{self._n}"
            start = base + timedelta(minutes=30 * rng.randrange(2000))
            try:
                self.stack.emulator.state.book("bob@example.com", rng.choice(self.calendars), title,
                                               start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                               (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
                self.made[title] = time.time()
            except Exception as error:  # a clash with another booking on that slot: try another
                log(f"change not made: {error}")
            next_at += self.changes_gap
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def _bookings(self) -> None:
        rng = random.Random(30)
        first_day = datetime.now(UTC).date() + timedelta(days=1)
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.web_port, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        next_at = time.monotonic()
        while not self.stop.is_set():
            day = first_day + timedelta(days=rng.randrange(60))
            start = datetime(day.year, day.month, day.day, 8, tzinfo=UTC) + timedelta(minutes=30 * rng.randrange(20))
            body = json.dumps({"room_id": rng.choice(self.room_ids), "title": "api booking",
                               "start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat()})
            sent = time.time()
            try:
                conn.request("POST", "/api/v1/reservations", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.statuses[response.status] += 1
                if response.status == 201:
                    self.sent[json.loads(data)["id"]] = sent
            except (OSError, http.client.HTTPException) as error:
                self.statuses[type(error).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.stack.web_port, timeout=30)
            next_at += self.bookings_gap
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    def _poll(self) -> None:
        while not self.stop.is_set():
            pending = [i for i in list(self.sent) if i not in self.confirmed]
            titles = [t for t in list(self.made) if t not in self.seen]
            try:
                with self.engine.connect() as conn:
                    now = time.time()
                    if pending:
                        for (rid,) in conn.execute(sa.text(
                                "SELECT id FROM reservations WHERE id = ANY(:ids) AND status = 'confirmed'"),
                                {"ids": pending}):
                            self.confirmed[rid] = now
                    if titles:
                        for (title,) in conn.execute(sa.text(
                                "SELECT title FROM reservations WHERE title = ANY(:titles)"), {"titles": titles}):
                            self.seen.setdefault(title, now)
            except Exception as error:
                log(f"poll failed: {error}")
            self.stop.wait(0.2)

    def latencies(self, since: float, until: float) -> tuple[list[float], list[float], int, int]:
        """Confirm and push latencies of what was sent/made in [since, until); and how many never landed."""
        confirm = [self.confirmed[i] - t for i, t in self.sent.items() if since <= t < until and i in self.confirmed]
        unconfirmed = sum(1 for i, t in self.sent.items() if since <= t < until and i not in self.confirmed)
        push = [self.seen[k] - t for k, t in self.made.items() if since <= t < until and k in self.seen]
        unseen = sum(1 for k, t in self.made.items() if since <= t < until and k not in self.seen)
        return confirm, push, unconfirmed, unseen


class Sampler:
    """Every 5 s: the sweep plan and the budget's counters (kept here too: Redis keeps them an hour)."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.plans: list[tuple[float, object]] = []
        self.minutes: dict[int, dict[str, int]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.sample()

    def sample(self) -> None:
        from roombridge import sweep
        from roombridge.gcal import call_budget
        from roombridge.queue import redis

        usage = call_budget(self.stack.app).usage(minutes=3)
        for m in usage.minutes:
            self.minutes[m.minute] = dict(m.granted)
        plan = sweep.latest(redis(self.stack.app))
        if plan is not None:
            self.plans.append((time.time(), plan))

    def _run(self) -> None:
        while not self.stop.wait(5):
            try:
                self.sample()
            except Exception as error:
                log(f"sample failed: {error}")


def _calls(stack: Stack) -> list[tuple[float, int, bool]]:
    """(when, status, refused by quota) of every Calendar call Google (the emulator) saw."""
    out = []
    for r in stack.emulator.state.requests():
        if "/calendar/v3/" in r["path"]:
            out.append((datetime.fromisoformat(r["time"]).timestamp(), r["status"], bool(r.get("refused_by_quota"))))
    return out


def _busiest_window(times: list[float]) -> int:
    """The most calls in any sliding 60 s."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 60:
            j += 1
        best = max(best, i - j + 1)
    return best


def _progress(stack: Stack) -> tuple[int, int, int]:
    with stack.app.app_context():
        from roombridge import db
        from roombridge.db import utcnow

        session = db.session()
        rooms = session.scalar(sa.text("SELECT count(*) FROM rooms WHERE in_scope"))
        live = session.scalar(sa.text("SELECT count(DISTINCT room_id) FROM watch_channels "
                                      "WHERE stopped_at IS NULL AND expiration > :now"), {"now": utcnow()})
        synced = session.scalar(sa.text("SELECT count(*) FROM room_sync_states WHERE last_sync_at IS NOT NULL"))
        session.rollback()
    return rooms, live, synced


def _per_minute(title: str, stack: Stack, load: Load, sampler: Sampler, since: float, until: float,
                kinds: bool = True) -> tuple[Table, dict]:
    calls = [c for c in _calls(stack) if since <= c[0] < until]
    table = Table(title, ["minute", *(["write", "sync", "sweep", "renewal"] if kinds else []), "Google saw",
                          "busiest 60 s", "rate-limit answers", "confirm p50 s", "confirm p99 s", "push p50 s",
                          "push p99 s", "sweep cycle min"])
    worst = {"busiest": 0, "limits": 0, "confirm": [], "push": [], "cycle": 0.0, "unconfirmed": 0, "unseen": 0}
    start = since
    n = 0
    while start < until - 30:
        end = min(start + 60, until)
        n += 1
        in_minute = [c for c in calls if start <= c[0] < end]
        window = [c[0] for c in calls if end - 60 <= c[0] < end]
        limits = sum(1 for c in in_minute if c[1] in (403, 429) and c[2])
        confirm, push, unconfirmed, unseen = load.latencies(start, end)
        cycles = [p.cycle_seconds for t, p in sampler.plans if start <= t < end and p.cycle_seconds is not None]
        granted = Counter()
        for minute, counts in sampler.minutes.items():
            if start <= minute * 60 + 30 < end:  # the budget's minutes are calendar minutes: nearest
                granted.update(counts)
        busiest = _busiest_window(window)
        row = [n]
        if kinds:
            row += [granted["write"], granted["sync"], granted["sweep"], granted["renewal"]]
        row += [len(in_minute), busiest, limits, percentile(confirm, 50), percentile(confirm, 99),
                percentile(push, 50), percentile(push, 99), max(cycles) / 60 if cycles else float("nan")]
        table.add(*row)
        worst["busiest"] = max(worst["busiest"], busiest)
        worst["limits"] += limits
        worst["confirm"] += confirm
        worst["push"] += push
        worst["unconfirmed"] += unconfirmed
        worst["unseen"] += unseen
        worst["cycle"] = max([worst["cycle"], *cycles])
        start = end
    return table, worst


PRESEED_THREADS = 4  # setup only: the rooms in service are made by 4 threads at once, off the quota


def _preseed(stack: Stack, room_ids: list[int], backlog: int) -> float:
    """Rooms already in service before the run: a channel each and one full sync, made in this process.

    Made with Google's quota off and a budget out of the way (setup, not what is measured), then
    the channels. renewal moments spread over the next 8 days, as a fleet that has run for a week has
    them, and `backlog` of them due now (renewals piled up while the scheduler was down).
    Returns the seconds it took.
    """
    from roombridge import channels, db, sync
    from roombridge.db import utcnow
    from roombridge.gcal import CalendarGateway
    from roombridge.models import Room
    from webapp import create_app

    started = time.monotonic()
    stack.emulator.state.update_settings(quota_enabled=False)
    app = create_app(**{**stack._typed(), "GOOGLE_CALLS_PER_MINUTE": 10_000_000})
    config = app.config["ROOMBRIDGE"]
    done = [0]
    failures: list[BaseException] = []
    lock = threading.Lock()

    def seed(share: list[int]) -> None:
        try:
            _seed(share)
        except BaseException as error:  # re-raised below: a setup that half ran measures nothing
            failures.append(error)

    def _seed(share: list[int]) -> None:
        # One app context, session and pair of gateways per thread: neither is shared across threads.
        with app.app_context():
            session = db.session()
            watch, lister = CalendarGateway.for_app(app, kind="renewal"), CalendarGateway.for_app(app, kind="sweep")
            for room_id in share:
                room = session.get(Room, room_id)
                channels.create_channel(session, watch, room, config, utcnow())
                sync.sync_room_now(session, lister, room, config, full=True)
                with lock:
                    done[0] += 1
                    if done[0] % 1000 == 0:
                        log(f"preseed: {done[0]}/{len(room_ids)} rooms in {time.monotonic() - started:.0f} s")

    threads = [threading.Thread(target=seed, args=(room_ids[n::PRESEED_THREADS],)) for n in range(PRESEED_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    with app.app_context():
        session = db.session()
        session.execute(sa.text("UPDATE watch_channels SET expiration = now() + interval '1 day' "
                                "+ random() * interval '7 days' WHERE room_id = ANY(:ids)"), {"ids": room_ids})
        session.execute(sa.text(
            "UPDATE watch_channels SET expiration = now() + interval '3 hours' WHERE room_id IN "
            "(SELECT id FROM rooms WHERE id = ANY(:ids) ORDER BY random() LIMIT :n)"), {"ids": room_ids, "n": backlog})
        session.execute(sa.text("UPDATE watch_channels SET created_at = expiration - interval '7 days' "
                                "WHERE room_id = ANY(:ids)"), {"ids": room_ids})
        session.commit()
    db.engine(app).dispose()
    stack.emulator.state.update_settings(quota_enabled=True)
    return time.monotonic() - started


def _restart(stack: Stack, workers: int, **settings: object) -> None:
    for process in [p for p in stack.processes if p.name in ("worker", "scheduler")]:
        process.stop()
        stack.processes.remove(process)
    stack.settings.update({k: str(v) for k, v in settings.items()})
    for _ in range(workers):
        stack.start_worker()
    stack.start("scheduler", [str(BIN / "flask"), "--app", "wsgi", "scheduler"])


def run(quick: bool) -> list[Table]:
    rooms = _env_int("BENCH_QUOTA_ROOMS", 200 if quick else 10_000)
    minutes = float(os.environ.get("BENCH_QUOTA_MINUTES") or (2 if quick else 10))
    old_minutes = float(os.environ.get("BENCH_QUOTA_OLD_MINUTES") or (1 if quick else 5))
    workers = _env_int("BENCH_QUOTA_WORKERS", 4)
    max_age = _env_int("BENCH_QUOTA_MAX_AGE", 3600 if rooms >= 10_000 else max(900, rooms * 60 // 150))
    # Rooms already in service (made quickly, off the quota), and the rest added at once during the run.
    preseeded = _env_int("BENCH_QUOTA_PRESEED", max(0, rooms - 2000))
    backlog = _env_int("BENCH_QUOTA_RENEWAL_BACKLOG", preseeded // 20)
    changes_per_minute = rooms * 10 / (8 * 60)
    settings = dict(GOOGLE_CALLS_PER_MINUTE=BUDGET, SAFETY_SYNC_INTERVAL_SECONDS=30,
                    SAFETY_SYNC_MAX_AGE_SECONDS=max_age, SCHEDULER_TICK_SECONDS=10, BOOKABLE_HOURS="00:00-23:59")
    tables = []
    with Stack("postgresql", **settings) as stack:
        stack.emulator.state.update_settings(quota_enabled=True)
        log(f"quota: {rooms} rooms, {workers} workers, max age {max_age} s, {changes_per_minute:.0f} changes/min")
        room_ids = stack.add_rooms(rooms)
        calendars = [f"bench-{n:05d}@resource.calendar.google.com" for n in range(rooms)]
        token = stack.api_token()
        stack.start_web()
        with stack.app.app_context():
            from roombridge import db
            from roombridge.models import Room

            # The rooms added during the run: out of scope until then.
            db.session().execute(sa.update(Room).where(Room.id.in_(room_ids[preseeded:])).values(in_scope=False))
            db.session().commit()
        seeded_in = _preseed(stack, room_ids[:preseeded], backlog) if preseeded else 0.0
        log(f"preseed: {preseeded} rooms in {seeded_in:.0f} s")
        with stack.app.app_context():
            db.session().execute(sa.update(Room).where(Room.id.in_(room_ids[preseeded:])).values(in_scope=True))
            db.session().commit()
        sampler = Sampler(stack)
        sampler.start()
        added_from = time.time()
        _restart(stack, workers)

        # 1. The first add: every channel opened, every room first-synced, at the budget's pace.
        last_log = 0.0
        while True:
            total, live, synced = _progress(stack)
            if live >= total and synced >= total:
                break
            if time.time() - last_log > 60:
                log(f"first add: {live}/{total} channels, {synced}/{total} synced after "
                    f"{(time.time() - added_from) / 60:.1f} min")
                last_log = time.time()
            if time.time() - added_from > 3 * 3600:
                raise TimeoutError("the first add did not finish in 3 hours")
            time.sleep(2)
        added_until = time.time()
        add_calls = [c for c in _calls(stack) if added_from <= c[0] < added_until]
        added = rooms - preseeded
        first = Table("First add: every added room's channel and first full sync, paced by the budget "
                      f"({BUDGET} calls/min)", ["rooms in service", "rooms added at once", "minutes", "Google calls",
                                                "calls / min", "busiest 60 s", "rate-limit answers"])
        span = (added_until - added_from) / 60
        first_busiest = _busiest_window([c[0] for c in add_calls])
        first_limits = sum(1 for c in add_calls if c[2])
        first.add(preseeded, added, span, len(add_calls), len(add_calls) / span, first_busiest, first_limits)
        first.notes += [
            f"2 calls per added room (events.watch, events.list) at most {BUDGET} a minute: {2 * added / BUDGET:.1f} "
            f"min is the floor, with the rooms in service swept and {backlog} overdue channel renewals alongside; "
            f"never above the budget in any 60 s [{verdict(first_busiest <= BUDGET)}], rate-limit answers "
            f"{first_limits} [{verdict(first_limits == 0)}]",
            f"the {preseeded} rooms in service were made in this process before the run ({seeded_in:.0f} s, "
            "quota off): their channels' expirations spread over 7 days, as after a week of service",
        ]
        tables.append(first)

        # 2. The peak, new design.
        log(f"peak: {minutes} min, new design")
        load = Load(stack, token, calendars, room_ids, changes_per_minute, 30)
        load.start()
        peak_from = time.time()
        time.sleep(minutes * 60)
        peak_until = time.time()
        sampler.sample()
        table, worst = _per_minute(f"Peak, the rolling safety net and the shared budget ({rooms:,} rooms, "
                                   f"{workers} workers, budget {BUDGET}/min, Google 600/min per user)",
                                   stack, load, sampler, peak_from, peak_until)
        confirm99, push99 = percentile(worst["confirm"], 99), percentile(worst["push"], 99)
        total, live, synced = _progress(stack)
        table.notes += [
            f"rate-limit answers {worst['limits']} [target 0: {verdict(worst['limits'] == 0)}]; busiest sliding "
            f"minute {worst['busiest']} calls [target <= {BUDGET}: {verdict(worst['busiest'] <= BUDGET)}]",
            f"booking confirm p99 {confirm99:.2f} s over {len(worst['confirm'])} bookings, {worst['unconfirmed']} "
            f"not confirmed by the end [target < 2 s: {verdict(confirm99 < 2)}]",
            f"push-to-reservation p99 {push99:.2f} s over {len(worst['push'])} changes, {worst['unseen']} not seen "
            f"by the end [target < 2 s: {verdict(push99 < 2)}]",
            f"sweep cycle (stalest room since its last sync) at most {worst['cycle'] / 60:.1f} min "
            f"[target <= SAFETY_SYNC_MAX_AGE_SECONDS = {max_age / 60:.0f} min: {verdict(worst['cycle'] <= max_age)}]",
            f"load: {changes_per_minute:.0f} Google changes/min over {rooms} rooms (10 per room per 8 h day), "
            f"30 API bookings/min ({dict(load.statuses)}); channels live {live}/{total} at the end",
        ]
        tables.append(table)

        # 3. Today's design on the same load.
        log(f"old design: {old_minutes} min, budget out of the way, burst safety net")
        _restart(stack, workers, GOOGLE_CALLS_PER_MINUTE=1_000_000, SAFETY_SYNC_INTERVAL_SECONDS=86400,
                 SAFETY_SYNC_MAX_AGE_SECONDS=86400)
        time.sleep(5)
        old_from = time.time()
        with stack.app.app_context():
            from roombridge.notifications import request_sync

            burst = sum(1 for room_id in room_ids if request_sync(room_id))
        time.sleep(old_minutes * 60)
        old_until = time.time()
        load.close()
        sampler.close()
        old, old_worst = _per_minute(f"Today's design on the same load: every room's sync at once ({burst:,} "
                                     "enqueued), no shared budget", stack, load, sampler, old_from, old_until,
                                     kinds=False)
        old.notes += [
            f"rate-limit answers {old_worst['limits']}; busiest sliding minute {old_worst['busiest']} calls "
            f"(Google's quota: 600 per user)",
            "the budget is set out of reach (1,000,000/min); the shared pause after a rate-limit answer "
            "(part 1) still acts, so this is kinder than the original per-worker retries",
        ]
        tables.append(old)
    return tables

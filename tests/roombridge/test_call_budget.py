"""The Google call budget shared by every process: real Redis, real processes, the emulator over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from bisect import bisect_left
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis import Redis

from roombridge import db
from roombridge.call_budget import KINDS, CallBudget
from roombridge.gcal import CalendarGateway, OverBudget, RetriableGoogleError, call_budget
from tests.factories import make_room
from tests.support import SERVICE_ACCOUNT, free_port, invoke_ok, wait_until

REPO = Path(__file__).resolve().parents[2]
ROOM = "atlas@resource.calendar.google.com"
SINCE = datetime(2030, 1, 1, tzinfo=UTC)


def _process(*args: str, env: dict | None = None, stdin: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.roombridge.budget_process", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else None, text=True)


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _calendar_calls(emulator) -> int:
    return sum(1 for r in emulator.state.requests() if r["path"].startswith("/calendar/v3/"))


def _list(app, kind: str) -> None:
    with app.app_context():
        list(CalendarGateway.for_app(kind=kind).list_events(ROOM, time_min=SINCE).pages())


# --- the limiter alone ---------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_hammering_together_never_exceed_the_budget_in_any_sliding_window(redis_url):
    # Google's window is a minute; the same limiter over a 2-second window shows several windows quickly.
    budget, period, grants = 40, 2.0, 60
    hammers = [_process("hammer", redis_url, str(budget), str(period), kinds, str(grants), "60")
               for kinds in ("write,sync,sweep", "sweep,renewal,sync")]
    outputs = [_lines(p.communicate(timeout=90)[0]) for p in hammers]

    granted = [[line["at"] for line in lines if "at" in line] for lines in outputs]
    assert [len(times) for times in granted] == [grants, grants]  # both took their share of one budget
    times = sorted(granted[0] + granted[1])
    assert times[-1] - times[0] > 2 * period  # 120 calls at most 40 a window: several windows were covered
    busiest = max(bisect_left(times, t + period) - i for i, t in enumerate(times))
    assert busiest <= budget
    usage = CallBudget(Redis.from_url(redis_url), budget, period=period).usage(minutes=2)
    assert sum(sum(m.refused.values()) for m in usage.minutes) > 0  # they did contend: the limiter held them back
    assert sum(m.total for m in usage.minutes) == 2 * grants


def test_each_kind_leaves_its_reserve_writes_may_take_the_last_token(redis_url):
    budget = CallBudget(Redis.from_url(redis_url), 60)
    assert (budget.burst, budget.reserves) == (3, {"write": 0, "sync": 1, "sweep": 2, "renewal": 2})

    taken = [(kind, budget.take(kind)) for kind in ("sweep", "sweep", "renewal", "sync", "sync", "write", "write")]

    assert [(kind, d.verdict) for kind, d in taken] == [
        ("sweep", "granted"), ("sweep", "exhausted"), ("renewal", "exhausted"),
        ("sync", "granted"), ("sync", "exhausted"), ("write", "granted"), ("write", "exhausted")]
    # Each refusal says when that kind may come back: the lower its priority, the later.
    waits = {kind: budget.take(kind).retry_after for kind in KINDS}
    assert 0 < waits["write"] < waits["sync"] < waits["sweep"]
    assert waits["renewal"] == pytest.approx(waits["sweep"], abs=0.1)
    minute = budget.usage(minutes=1).minutes[-1]
    assert minute.granted == {"write": 1, "sync": 1, "sweep": 1, "renewal": 0}
    assert minute.refused == {"write": 2, "sync": 2, "sweep": 2, "renewal": 2}


def test_a_rate_limit_pauses_every_kind_once_then_a_later_one_pauses_longer(redis_url):
    budget = CallBudget(Redis.from_url(redis_url), 500, pause_base=0.4)

    first = budget.pause_after("sync", 429, "rateLimitExceeded", "list atlas")
    assert 0.2 <= first <= 0.4  # truncated exponential with jitter: between half and all of the base
    assert {kind: budget.take(kind).verdict for kind in KINDS} == dict.fromkeys(KINDS, "paused")
    # An answer to a call already in flight when the pause began does not lengthen it.
    assert budget.pause_after("write", 403, "userRateLimitExceeded", "insert x") <= first
    assert budget.usage().pause_level == 1

    wait_until(lambda: budget.usage().pause_left == 0, what="the pause to end")
    assert budget.take("sweep").granted
    again = budget.pause_after("sweep", 429, "rateLimitExceeded", "list atlas")

    usage = budget.usage()
    assert usage.pause_level == 2 and 0.4 <= again <= 0.8
    assert [(a.kind, a.status, a.reason) for a in usage.rate_limits] == [
        ("sweep", 429, "rateLimitExceeded"), ("write", 403, "userRateLimitExceeded"),
        ("sync", 429, "rateLimitExceeded")]


# --- through the gateway, against the emulator ------------------------------------------------------


@pytest.fixture
def room_app(make_google_app, emulator):
    """An app with a small budget and one in-scope room holding a few events."""

    def make(**settings):
        app = make_google_app(**{"GOOGLE_CALLS_PER_MINUTE": 60, "GOOGLE_MAX_ATTEMPTS": 2, **settings})
        emulator.state.add_calendar(ROOM, "Atlas", kind="room")
        emulator.state.share(ROOM, SERVICE_ACCOUNT, "writer")
        with app.app_context():
            make_room(db.session(), calendar_id=ROOM, name="Atlas")
            db.session().commit()
        return app

    return make


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the budget lives in Redis alone
def test_every_calendar_call_takes_a_token_of_its_kind_pages_watch_and_stop_included(room_app, emulator):
    app = room_app(GOOGLE_CALLS_PER_MINUTE=500)
    for n in range(3):
        emulator.state.insert_as(ROOM, "bob@example.com", {"summary": f"E{n}", "start": f"2030-01-0{n + 2}T10:00:00Z",
                                                            "end": f"2030-01-0{n + 2}T11:00:00Z"})
    emulator.state.update_settings(page_size_cap=1)
    emulator.state.clear_requests()

    _list(app, "sync")  # three events a page at a time: at least three pages
    with app.app_context():
        renewal = CalendarGateway.for_app(kind="renewal")
        channel = renewal.watch(ROOM, channel_id="c1", address="http://127.0.0.1:9/hook", token="t")
        renewal.stop_channel(channel.id, channel.resource_id)
        write = CalendarGateway.for_app(kind="write")
        assert write.check_access(ROOM).ok
        granted = call_budget(app).usage(minutes=2).minutes

    pages = _calendar_calls(emulator) - 3
    assert pages >= 3
    assert {kind: sum(m.granted[kind] for m in granted) for kind in KINDS} == {
        "write": 1, "sync": pages, "sweep": 0, "renewal": 2}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_redis_down_writes_go_ahead_and_background_calls_wait_for_it(room_app, emulator):
    app = room_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    emulator.state.clear_requests()

    _list(app, "write")  # fails open: a person is waiting
    for kind in ("sync", "sweep", "renewal"):
        with pytest.raises(OverBudget) as refused:
            _list(app, kind)
        assert refused.value.reason == "budgetUnavailable" and refused.value.retriable

    assert _calendar_calls(emulator) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_rate_limited_call_is_tried_again_after_the_shared_pause(room_app, emulator):
    app = room_app(GOOGLE_RETRY_BASE_SECONDS=0.2)
    emulator.state.add_fault(403, times=1, calendar=ROOM, reason="userRateLimitExceeded")
    emulator.state.clear_requests()

    _list(app, "write")

    assert [r["status"] for r in emulator.state.requests(calendar=ROOM)] == [403, 200]
    usage = call_budget(app).usage(minutes=2)
    assert [(a.kind, a.status, a.reason) for a in usage.rate_limits] == [("write", 403, "userRateLimitExceeded")]
    assert usage.pause_level == 1
    # The second try was told "paused" by the budget and waited for it, rather than on a backoff of its own.
    assert sum(m.refused["write"] for m in usage.minutes) >= 1
    assert sum(m.granted["write"] for m in usage.minutes) == 2


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_rate_limit_answer_pauses_every_process(room_app, emulator, redis_url):
    # A pause of 2 to 4 s: longer than a sweep waits (1 s), shorter than a write does (10 s).
    app = room_app(GOOGLE_RETRY_BASE_SECONDS=4.0, GOOGLE_MAX_ATTEMPTS=1)
    config = app.config["ROOMBRIDGE"]
    other = _process("gateway", ROOM, stdin=True, env={
        **os.environ, "ENV": "development", "SECRET_KEY": "x", "DATABASE_URL": config.DATABASE_URL,
        "REDIS_URL": redis_url,
        "GOOGLE_SERVICE_ACCOUNT_FILE": config.GOOGLE_SERVICE_ACCOUNT_FILE,
        "GOOGLE_CALENDAR_API_URL": config.GOOGLE_CALENDAR_API_URL, "GOOGLE_CALLS_PER_MINUTE": "60"})
    try:
        assert other.stdout.readline().strip() == "ready"
        emulator.state.add_fault(429, times=1, calendar=ROOM)
        with pytest.raises(RetriableGoogleError) as limited:
            _list(app, "sync")  # this process meets Google's rate limit...
        assert limited.value.status == 429
        calls = _calendar_calls(emulator)

        # ...and the other process's next calls wait for the pause: a sweep gives up at once, saying
        # when to come back; a write waits it out and then goes through.
        other.stdin.write("sweep\nwrite\n")
        other.stdin.flush()
        sweep_answer, write_answer = json.loads(other.stdout.readline()), json.loads(other.stdout.readline())
    finally:
        other.stdin.close()
        other.stdout.close()
        other.wait(30)

    assert sweep_answer["error"] == "budgetPaused" and sweep_answer["retry_after"] > 1
    assert write_answer == {"kind": "write", "ok": True}
    assert _calendar_calls(emulator) == calls + 1  # only the write reached Google
    usage = call_budget(app).usage(minutes=2)
    assert sum(m.refused["write"] for m in usage.minutes) >= 1  # the write was told "paused" before it went
    assert [(a.kind, a.status, a.reason) for a in usage.rate_limits] == [("sync", 429, "rateLimitExceeded")]


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_writes_get_through_while_two_processes_of_sweeps_are_starved(room_app, emulator, redis_url):
    app = room_app()  # 60 a minute: three tokens at most, sweeps must leave two
    sweepers = [_process("hammer", redis_url, "60", "60", "sweep", "1000", "8") for _ in range(2)]
    try:
        wait_until(lambda: call_budget(app).usage(minutes=1).minutes[-1].granted["sweep"] >= 1,
                   what="the sweepers to start")
        for _ in range(4):
            _list(app, "write")
    finally:
        outputs = [_lines(p.communicate(timeout=30)[0]) for p in sweepers]

    minutes = call_budget(app).usage(minutes=2).minutes
    assert sum(m.granted["write"] for m in minutes) == 4  # every write got through...
    assert sum(m.refused["sweep"] for m in minutes) > sum(m.granted["sweep"] for m in minutes)  # ...sweeps mostly not
    assert sum(line.get("refused", 0) for lines in outputs for line in lines) > 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_google_usage_shows_calls_by_kind_against_the_budget_the_pause_and_the_last_rate_limits(app, runner):
    budget = call_budget(app)
    for kind in ("write", "sync", "sync", "sweep"):
        assert budget.take(kind).granted
    budget.pause_after("sync", 403, "userRateLimitExceeded", "list atlas@resource.calendar.google.com")

    output = invoke_ok(runner, ["google", "usage", "--minutes", "2"]).output.splitlines()

    assert output[0].startswith("budget 500 calls/minute, burst 25 (sync leaves 10, sweep leaves 15")
    assert output[1].startswith("pause: ") and "(level 1)" in output[1] and "none" not in output[1]
    assert output[2].split("\t") == ["minute (UTC)", *KINDS, "total", "of budget", "refused"]
    rows = [line.split("\t") for line in output[3:5]]
    assert sum(int(row[1]) for row in rows) == 1 and sum(int(row[2]) for row in rows) == 2  # write, sync
    assert sum(int(row[5]) for row in rows) == 4
    assert output[5] == "last rate-limit answers: 1"
    assert output[6].split("\t")[1:4] == ["sync", "403 userRateLimitExceeded",
                                          "list atlas@resource.calendar.google.com"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_calls_refused_by_the_allowlist_are_counted_and_shown(room_app, emulator):
    from roombridge.gcal import CalendarNotInScope
    from tests.webapp.signin import sign_in

    app = room_app()
    emulator.state.clear_requests()
    with app.app_context():
        gateway = CalendarGateway.for_app(kind="write")
        for calendar in ("alice@example.com", "other-room@resource.calendar.google.com"):
            with pytest.raises(CalendarNotInScope):
                gateway.get_event(calendar, "x")
    assert _calendar_calls(emulator) == 0
    usage = call_budget(app).usage(minutes=1)
    assert usage.refused_by_allowlist == 2 and usage.last_refused_calendar == "other-room@resource.calendar.google.com"

    out = invoke_ok(app.test_cli_runner(), ["google", "usage"]).output
    assert "calls refused by the allowlist (not an in-scope room): 2 (zero expected)" in out
    client = app.test_client()
    sign_in(client, "admin@example.com")
    page = client.get("/admin/").get_data(as_text=True)
    assert '<strong id="allowlist-refusals">2</strong>' in page and "on the 1 room calendars in scope" in page

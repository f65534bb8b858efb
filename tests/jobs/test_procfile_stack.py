"""The Procfile's processes (web under gunicorn, worker, scheduler) as real processes on one database.

These tests run the whole installation as production runs it, on the embedded default
(one SQLite file), against the emulator over HTTP, and read every process's output.
Both are slow; the renewal soak lasts ROOMBRIDGE_SOAK_SECONDS of real time (150 here, 300 in
`make soak`): run them alone (`pytest -m slow tests/jobs/test_procfile_stack.py`), not beside
other heavy tests, since a starved machine delays renewals as a busy host would.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from roombridge import api_tokens, db
from roombridge.models import Reservation, ReservationSource, ReservationStatus, WatchChannel
from tests.support import ROOT, TEST_SETTINGS, free_port, wait_until, worker_env
from tests.sync_support import add_room
from webapp import create_app

VENV_BIN = Path(sys.executable).parent
LOCKED = "database is locked"
# Real time the renewal soak runs: 150 s is two and a half lifetimes of a one-minute channel.
SOAK_SECONDS = float(os.environ.get("ROOMBRIDGE_SOAK_SECONDS", "150"))


def procfile_commands() -> dict[str, str]:
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if command.strip():
            commands[name.strip()] = command.strip()
    return commands


@dataclass
class ProcfileStack:
    """Every Procfile process, started by its Procfile line in a shell, each in its own process group."""

    app: object
    logs: Path
    port: int
    settings: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        env = worker_env(self.app, PORT=str(self.port), WEB_CONCURRENCY="2",
                         PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **self.settings)
        self.logs.mkdir(parents=True, exist_ok=True)
        for name, command in procfile_commands().items():
            # The web binds every address in production; here the loopback only.
            command = command.replace("0.0.0.0:", "127.0.0.1:")
            with open(self.logs / f"{name}.log", "wb") as out:
                self.processes[name] = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env,
                                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._web_answers, timeout=120, what="gunicorn to answer")  # a loaded machine starts slowly
        except BaseException:
            self.__exit__()  # no process left running on the test's Redis database
            raise
        return self

    def _web_answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.processes.items()}

    def __exit__(self, *exc):
        for proc in self.processes.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.processes.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def output(self) -> dict[str, str]:
        return {path.stem: path.read_text(errors="replace") for path in self.logs.glob("*.log")}


@pytest.fixture
def sqlite_stack_app(tmp_path, sqlite_template, redis_url, emulator, service_account_file):
    """An app on a SQLite file of its own, wired to the emulator, its webhook on a port for gunicorn."""
    path = tmp_path / "roombridge.sqlite3"
    shutil.copy(sqlite_template, path)
    port = free_port()
    app = create_app(**TEST_SETTINGS, DATABASE_URL=f"sqlite:///{path}",
                     REDIS_URL=redis_url, GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file,
                     GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url, WEBHOOK_BASE_URL=f"http://127.0.0.1:{port}")
    yield app, port
    db.engine(app).dispose()


def _rooms(emulator, app, count: int) -> dict[str, int]:
    return {f"room{n}@resource.calendar.google.com": add_room(emulator, app, f"room{n}@resource.calendar.google.com",
                                                               f"Room {n}") for n in range(count)}


def _channels(app) -> list[WatchChannel]:
    with app.app_context():
        return list(db.session().scalars(sa.select(WatchChannel)))


def _every_room_watched(app, room_ids) -> bool:
    now = datetime.now(UTC)
    return {c.room_id for c in _channels(app) if c.is_live(now)} >= set(room_ids)


def _day(offset: int) -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=offset)


@pytest.mark.slow
def test_web_worker_and_scheduler_on_one_sqlite_file_write_concurrently_without_database_is_locked(
        sqlite_stack_app, emulator, tmp_path):
    app, port = sqlite_stack_app
    rooms = _rooms(emulator, app, 3)
    with app.app_context():
        token = api_tokens.create(db.session(), "admin@example.com").token
    # Short channels, so that renewals (new channel, then stop the old one) run all through the test.
    emulator.state.update_settings(max_channel_ttl=8)

    stack = ProcfileStack(app, tmp_path / "logs", port, settings={"SCHEDULER_TICK_SECONDS": "1"})
    answers: list[int] = []
    google_bookings: list[str] = []
    with stack:
        wait_until(lambda: _every_room_watched(app, rooms.values()), timeout=30, what="every room's first channel")
        deadline = time.monotonic() + 10

        def book_through_the_api(thread: int) -> None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            n = 0
            while time.monotonic() < deadline:
                # Each thread its own days, mornings only: the API's bookings never clash with each other
                # or with Google's (afternoons), so every write is a real one.
                start = _day(2 + thread * 20 + n // 5) + timedelta(hours=8 + n % 5)
                room_id = list(rooms.values())[n % len(rooms)]
                made = session.post(f"{stack.url}/api/v1/reservations", timeout=30, json={
                    "room_id": room_id, "title": f"API {thread}.{n}", "start": start.isoformat(),
                    "end": (start + timedelta(minutes=45)).isoformat()})
                answers.append(made.status_code)
                if made.status_code == 201 and n % 3 == 0:  # and some cancellations: writes of another kind
                    answers.append(session.delete(f"{stack.url}/api/v1/reservations/{made.json()['id']}",
                                                  timeout=30).status_code)
                n += 1
                time.sleep(0.05)
            session.close()  # no idle keep-alive connection for gunicorn to wait out at shutdown

        def book_in_google() -> None:
            n = 0
            while time.monotonic() < deadline:
                start = _day(2 + n // 4) + timedelta(hours=14 + n % 4)
                room = list(rooms)[n % len(rooms)]
                event = emulator.state.book("carol@example.com", room, f"Google {n}", start.isoformat(),
                                            (start + timedelta(minutes=30)).isoformat())
                google_bookings.append(event["id"])
                n += 1
                time.sleep(random.uniform(0.1, 0.4))

        threads = [threading.Thread(target=book_through_the_api, args=(t,)) for t in range(4)]
        threads.append(threading.Thread(target=book_in_google))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        def settled() -> bool:
            with app.app_context():
                rows = list(db.session().scalars(sa.select(Reservation)))
            pending = [r for r in rows if r.status == ReservationStatus.PENDING]
            mirrored = {r.google_event_id for r in rows if r.source == ReservationSource.GOOGLE}
            return not pending and mirrored >= set(google_bookings)

        wait_until(settled, timeout=60, interval=0.5, what="every write to reach Google and every Google booking back")
        alive = stack.alive()

    output = stack.output()
    locked = {name: [line for line in text.splitlines() if LOCKED in line] for name, text in output.items()}
    assert locked == {name: [] for name in output}, f"'{LOCKED}' in the logs: {locked}"
    assert alive == {"web": True, "worker": True, "scheduler": True}
    # The test did what it says: concurrent bookings, pushes from Google, and renewals while they ran.
    assert answers.count(201) >= 20, answers
    assert set(answers) <= {200, 201}, sorted(set(answers))
    assert len(google_bookings) >= 20
    renewed = {c.room_id for c in _channels(app) if c.stopped_at is not None}
    assert renewed == set(rooms.values())  # every room's channel was replaced while the writes ran
    assert re.search(r'"POST /webhooks/google/calendar HTTP/1.1" 2\d\d', output["web"])
    assert shlex.split(procfile_commands()["web"])[0] == "gunicorn"


def coverage_gaps(channels: list[dict], start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """Spans of [start_ms, end_ms] in which none of these channels (the emulator's) was live."""
    spans = sorted((c["created"], min(c["stoppedAt"] or end_ms, int(c["expiration"]))) for c in channels)
    gaps, covered = [], start_ms
    for opened, ended in spans:
        if opened > covered:
            gaps.append((covered, opened))
        covered = max(covered, ended)
    if covered < end_ms:
        gaps.append((covered, end_ms))
    return [(a, b) for a, b in gaps if b > start_ms and a < end_ms]


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 180)
def test_every_room_keeps_a_live_channel_without_a_gap_when_google_gives_one_minute_channels(
        sqlite_stack_app, emulator, tmp_path):
    app, port = sqlite_stack_app
    rooms = _rooms(emulator, app, 3)
    # We ask for a week; Google's answer says a minute, and the answer is the truth.
    emulator.state.update_settings(max_channel_ttl=60)
    stack = ProcfileStack(app, tmp_path / "logs", port)  # SCHEDULER_TICK_SECONDS left at its default
    with stack:
        wait_until(lambda: _every_room_watched(app, rooms.values()), timeout=60, what="every room's first channel")
        start_ms = int(emulator.state.clock.now().timestamp() * 1000)
        time.sleep(SOAK_SECONDS)
        end_ms = int(emulator.state.clock.now().timestamp() * 1000)
        alive = stack.alive()

    assert alive == {"web": True, "worker": True, "scheduler": True}
    at_google = emulator.state.channels_info()
    assert {int(c["expiration"]) - c["created"] for c in at_google} == {60_000}
    gaps = {room: coverage_gaps([c for c in at_google if c["calendar"] == room], start_ms, end_ms) for room in rooms}
    assert gaps == {room: [] for room in rooms}
    # Renewed about once a minute each: the test did span several lifetimes of every room's channel.
    renewals = {room: sum(1 for c in at_google if c["calendar"] == room and start_ms < c["created"] < end_ms)
                for room in rooms}
    assert min(renewals.values()) >= int(SOAK_SECONDS // 60), renewals

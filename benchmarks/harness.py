"""What every benchmark shares: processes on free loopback ports, a fresh stack, timing, tables.

A `Stack` is one Roombridge installation for one benchmark: a fresh database (PostgreSQL
or SQLite), its own Redis logical database (flushed), the Calendar emulator in this
process on a real port, and an app object here for seeding. `start_web()` and
`start_worker()` run the real Procfile processes (gunicorn with the production settings,
the RQ worker) as subprocesses pointed at the same stack. Everything listens on 127.0.0.1
and is stopped (by the process group we started) when the stack closes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from emulator import DEMO_SERVICE_ACCOUNT as SERVICE_ACCOUNT

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POSTGRES_SERVER = os.environ.get("BENCH_POSTGRES_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
POSTGRES_DB = os.environ.get("BENCH_POSTGRES_DB", "roombridge_bench")
# A logical database of its own: the benchmarks flush it, so never the app's (0) or the tests' (13).
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
ADMIN = "admin@example.com"


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


# --- tables --------------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: object) -> None:
        self.rows.append(list(row))

    def render(self) -> str:
        cells = [[_cell(v) for v in row] for row in [self.headers, *self.rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        lines = [f"## {self.title}", ""]
        for n, row in enumerate(cells):
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
            if n == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# --- processes -----------------------------------------------------------------------------------


class Process:
    """A subprocess in its own process group, so stopping it stops its children (gunicorn workers)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def procfile_command(kind: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            return command.strip()
    raise KeyError(f"no {kind!r} process in the Procfile")


def gunicorn_args(port: int, app_spec: str = "wsgi:app") -> list[str]:
    """The Procfile's web command, as production runs it, bound to 127.0.0.1:`port`."""
    command = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)),
                     procfile_command("web"))
    args = shlex.split(command)
    args[0] = str(BIN / "gunicorn")
    args = [f"127.0.0.1:{port}" if a.startswith("0.0.0.0:") else a for a in args]
    return [app_spec if a == "wsgi:app" else a for a in args]


def wait_http(url: str, timeout: float = 30) -> None:
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback only)
                return answer.status < 500
        except OSError:
            return False

    wait_until(answers, timeout, f"{url} to answer")


def require_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (Debian), then run the benchmark again")
    return found


# --- the stack -------------------------------------------------------------------------------------


def fresh_postgres(database: str = POSTGRES_DB) -> str:
    admin = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {database}"))
    admin.dispose()
    return f"{POSTGRES_SERVER}/{database}"


class Stack:
    """One fresh installation: database, Redis db, emulator, app object; web and worker on demand."""

    def __init__(self, database: str = "postgresql", *, emulator: bool = True, pushes: bool = True,
                 **settings: object):
        from redis import Redis

        from emulator import EmulatorServer
        from roombridge import migrate
        from webapp import create_app

        self._exit = ExitStack()
        self.dir = Path(tempfile.mkdtemp(prefix="roombridge-bench-"))
        self._exit.callback(shutil.rmtree, self.dir, ignore_errors=True)
        self.database = database
        self.database_url = fresh_postgres() if database == "postgresql" else f"sqlite:///{self.dir / 'bench.sqlite3'}"
        Redis.from_url(REDIS_URL).flushdb()
        self.web_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.settings: dict[str, str] = {
            "ENV": "development", "SECRET_KEY": "bench-secret", "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL, "WEBHOOK_BASE_URL": self.web_url, "ADMIN_EMAILS": ADMIN,
            # These benchmarks measure our code, not Google's quota: a budget they never reach.
            "GOOGLE_CALLS_PER_MINUTE": "1000000",
            # ...nor the limits per person: a load client books far faster than any person may.
            "BOOKING_WRITES_PER_MINUTE": "1000000", "INVITATIONS_PER_HOUR": "1000000",
            "MAX_LIVE_RESERVATIONS": "1000000", "MAX_HOURS_PER_ROOM_PER_WEEK": "1000000",
        }
        self.emulator = None
        if emulator:
            self.emulator = EmulatorServer(port=0, push_delay=0.0, push_retry_base=0.2)
            if not pushes:
                self.emulator.state.dispatcher = None  # no notifications at all (renewal at scale)
            self.emulator.bind()
            if pushes:
                self.emulator.state.dispatcher.start()
            threading.Thread(target=self.emulator._server.serve_forever, kwargs={"poll_interval": 0.05},
                             name="emulator-http", daemon=True).start()
            self._exit.callback(self._stop_emulator)
            key = self.emulator.create_service_account(SERVICE_ACCOUNT)
            key_file = self.dir / "service-account.json"
            key_file.write_text(json.dumps(key))
            self.settings.update(GOOGLE_SERVICE_ACCOUNT_FILE=str(key_file),
                                 GOOGLE_CALENDAR_API_URL=self.emulator.calendar_api_url)
        self.settings.update({k: str(v) for k, v in settings.items()})
        self.app = create_app(**{k: v for k, v in self._typed().items()})
        migrate.upgrade(self.app)
        self.processes: list[Process] = []

    def _typed(self) -> dict[str, object]:
        from roombridge.config import Config

        return {k: v for k, v in Config.from_env(environ=self.settings).__dict__.items()}

    def _stop_emulator(self) -> None:
        server = self.emulator._server
        server.shutdown()
        server.server_close()
        if self.emulator.state.dispatcher is not None:
            self.emulator.state.dispatcher.stop()

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings, "PYTHONUNBUFFERED": "1"}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, args, env or self.env, self.dir / f"{name}-{len(self.processes)}.log")
        self.processes.append(process)
        return process

    def start_web(self, port: int | None = None, app_spec: str = "wsgi:app") -> Process:
        port = port or self.web_port
        web = self.start("web", gunicorn_args(port, app_spec))
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
        except TimeoutError:
            raise RuntimeError(f"gunicorn did not start:\n{web.tail()}") from None
        return web

    def start_worker(self, *queues: str) -> Process:
        return self.start("worker", [str(BIN / "flask"), "--app", "wsgi", "worker", *queues])

    # --- seeding, in this process ---

    def add_rooms(self, count: int, *, channels: bool = False, prefix: str = "bench") -> list[int]:
        """`count` room calendars in the emulator, shared as writer, in scope here; channels optional."""
        from roombridge import db
        from roombridge.models import Room

        emails = [f"{prefix}-{n:05d}@resource.calendar.google.com" for n in range(count)]
        for email in emails if self.emulator else ():
            self.emulator.state.add_calendar(email, email.split("@")[0], kind="room", time_zone="UTC")
            self.emulator.state.share(email, SERVICE_ACCOUNT, "writer")
        with self.app.app_context():
            session = db.session()
            rooms = [Room(calendar_id=email, name=email.split("@")[0], capacity=8, time_zone="UTC")
                     for email in emails]
            session.add_all(rooms)
            session.commit()
            ids = [room.id for room in rooms]
        if channels:
            self.open_channels(ids)
        return ids

    def open_channels(self, room_ids: Iterable[int]) -> None:
        from roombridge import channels, db
        from roombridge.db import utcnow
        from roombridge.gcal import CalendarGateway
        from roombridge.models import Room

        with self.app.app_context():
            session, gateway = db.session(), CalendarGateway.for_app(self.app, kind="renewal")
            for room_id in room_ids:
                channels.create_channel(session, gateway, session.get(Room, room_id),
                                        self.app.config["ROOMBRIDGE"], utcnow())

    def api_token(self, email: str = ADMIN) -> str:
        """A token made the documented way: `flask --app wsgi tokens create EMAIL`."""
        out = subprocess.run([str(BIN / "flask"), "--app", "wsgi", "tokens", "create", email], cwd=ROOT,
                             env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    def calendar_calls(self, *, since: int = 0) -> list[dict]:
        """Calendar API calls in the emulator's request log (token grants left out).

        The emulator logs a call after answering it, so the log is read once it stopped growing.
        """
        wait_until(self._log_settled, 5, "the emulator's request log to settle", interval=0.02)
        return [r for r in self.emulator.state.requests()[since:] if "/calendar/v3/" in r["path"]]

    def log_mark(self) -> int:
        """A position in the emulator's request log, for `calendar_calls(since=...)`."""
        wait_until(self._log_settled, 5, "the emulator's request log to settle", interval=0.02)
        return len(self.emulator.state.request_log)

    def _log_settled(self) -> bool:
        before = len(self.emulator.state.request_log)
        time.sleep(0.05)
        return len(self.emulator.state.request_log) == before

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        from roombridge import db

        db.engine(self.app).dispose()
        self._exit.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_list_call(entry: dict) -> bool:
    return entry["method"] == "GET" and entry["path"].rstrip("/").endswith("/events")


def is_first_page(entry: dict) -> bool:
    return is_list_call(entry) and "pageToken" not in (entry.get("query") or {})

"""What tests share besides fixtures: settings, constants and helpers, defined once.

Tests import these from here; the conftest.py files keep only fixtures (and import from here
what their fixtures need).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from click.testing import Result

from emulator import DEMO_SERVICE_ACCOUNT
from roombridge import db

ROOT = Path(__file__).resolve().parents[1]


def _own_redis_url(base: str, worker: str) -> str:
    """The Redis database of this test process: `base`, or the next ones for pytest-xdist's workers.

    Tests flush their database, so two processes must never share one: worker gwN takes base + N.
    """
    if not worker.startswith("gw"):
        return base
    prefix, _, number = base.rpartition("/")
    own = int(number or 0) + int(worker.removeprefix("gw"))
    if own > 15:
        raise RuntimeError(f"{base} leaves no Redis database for xdist worker {worker}; use a lower one")
    return f"{prefix}/{own}"


REDIS_URL = _own_redis_url(os.environ.get("ROOMBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"),
                           os.environ.get("PYTEST_XDIST_WORKER", ""))
POSTGRES_SERVER = os.environ.get("ROOMBRIDGE_TEST_POSTGRES_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
# One database per test process (overridable), so two runs on one server never drop each other's.
POSTGRES_DB = os.environ.get("ROOMBRIDGE_TEST_POSTGRES_DB", f"roombridge_test_{os.getpid()}")
DATABASES = [d for d in os.environ.get("ROOMBRIDGE_TEST_DATABASES", "sqlite,postgresql").split(",") if d]

# The app's service account in the emulator: the demo's own, so tests and the demo seed agree.
SERVICE_ACCOUNT = DEMO_SERVICE_ACCOUNT
# ENV and AUTH_MODE said explicitly: the defaults are production and OIDC (fail closed).
# Hypothesis examples per test under `make fuzz` (the "fuzz" profile, tests/conftest.py); FUZZ_EXAMPLES=N
# in the environment for a shorter or longer run.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))


def examples(usual: int) -> int:
    """A fuzz test's number of examples: `usual` in ordinary runs and CI, FUZZ_EXAMPLES under `make fuzz`."""
    return FUZZ_EXAMPLES if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else usual


TEST_SETTINGS = dict(ENV="development", AUTH_MODE="dev", SECRET_KEY="test-secret",
                     ADMIN_EMAILS=frozenset({"admin@example.com"}))


def start_redis_server(port: int, *options: str) -> subprocess.Popen:
    """A redis-server on loopback `port`, without persistence, with extra `options`; waits until it listens."""
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def free_port() -> int:
    """A loopback port nothing listens on (closed again at once: a server may take it, or nothing)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def counting_statements(app):
    """Collect every SQL statement the app's engine sends while the block runs (N+1 checks)."""
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    engine = db.engine(app)
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Poll until `predicate()` is truthy and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def hold_write_lock(app):
    """Take the database's write lock for reservations from a connection of our own; returns it."""
    # On SQLite the write option makes the engine BEGIN IMMEDIATE (roombridge/db.py): the write lock.
    conn = db.engine(app).connect().execution_options(**{db.WRITE_OPTION: True})
    conn.begin()
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql("LOCK TABLE reservations IN EXCLUSIVE MODE")
    return conn


def invoke_ok(runner, args: list[str]) -> Result:
    """Run a CLI command and fail with its output when it does not exit 0."""
    result = runner.invoke(args=args)
    assert result.exit_code == 0, f"{args} exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
    return result


# --- Google: rooms in the emulator, a live app server it can push to, jobs run for real ---------


def shared_room(emulator, calendar_id: str, name: str, role: str | None = "writer") -> None:
    """A room calendar in the emulator, shared with the app's service account (role None: not shared)."""
    emulator.state.add_calendar(calendar_id, name, kind="room")
    if role:
        emulator.state.share(calendar_id, SERVICE_ACCOUNT, role)


class LiveServer:
    """Serves an app on a real port in a thread, so the emulator can POST push notifications."""

    def __init__(self, app):
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(10)


def run_jobs(app, queues=("write", "sync", "channels", "sweep", "default"), max_jobs: int | None = None) -> int:
    """Run queued jobs in this process with a real RQ worker until the queues are empty.

    Returns how many jobs ran (rq 3 keeps the counts in Redis, not on the worker object).
    """
    from rq import SimpleWorker

    from roombridge.queue import queue, redis

    # RQ installs its own SIGINT/SIGTERM handlers (they raise StopRequested) and leaves them in place
    # after a burst; put pytest's back, or a signal much later stops an unrelated test with StopRequested.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with app.app_context():
            worker = SimpleWorker([queue(q) for q in queues], connection=redis())
            worker.work(burst=True, max_jobs=max_jobs)
            worker.refresh()
            return worker.successful_job_count + worker.failed_job_count
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


# --- worker processes: `flask --app wsgi worker`, as the Procfile runs it ------------------------

# The settings a worker process shares with the test's app (the rest keep their defaults).
_WORKER_SETTINGS = ("ENV", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "GOOGLE_SERVICE_ACCOUNT_FILE",
                    "GOOGLE_CALENDAR_API_URL", "WEBHOOK_BASE_URL", "AUTH_MODE", "OIDC_ISSUER", "OIDC_CLIENT_ID",
                    "OIDC_CLIENT_SECRET")


def worker_env(app, **extra: str) -> dict[str, str]:
    """The environment of a worker process on the app's database, Redis and Google; `extra` adds settings."""
    config = app.config["ROOMBRIDGE"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMBRIDGE_")}
    for name in _WORKER_SETTINGS:
        value = getattr(config, name)
        if value is not None:
            env[name] = str(value)
    env["ADMIN_EMAILS"] = ",".join(sorted(config.ADMIN_EMAILS))
    return {**env, **extra}


def start_worker(app, *queues: str, burst: bool = False, output=subprocess.DEVNULL,
                 **settings: str) -> subprocess.Popen:
    """A worker process on the app's settings (plus `settings`), in a process group of its own.

    Its own group: the worker forks RQ's scheduler, and a kill must take both, as the death of
    a machine or a container would (killing only the worker orphans the scheduler).
    """
    args = [sys.executable, "-m", "flask", "--app", "wsgi", "worker", *(["--burst"] if burst else []), *queues]
    return subprocess.Popen(args, cwd=ROOT, env=worker_env(app, **settings), stdout=output,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(worker: subprocess.Popen) -> None:
    """SIGTERM the worker's process group (a warm shutdown); SIGKILL it if it has not ended in 10 s."""
    try:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        kill_worker(worker)


def kill_worker(worker: subprocess.Popen) -> None:
    """SIGKILL the worker and every process it started."""
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait(10)


@dataclasses.dataclass
class Stack:
    """An end-to-end installation: the app (served on a live port), the emulator, a worker process."""

    app: object
    emulator: object
    rooms: dict[str, int]  # room name -> id in the app
    url: str = ""  # the live server's base URL
    channel_id: str = ""  # the push channel of the room, when the test opened one
    api: object = None  # a test client carrying an API token, when the test made one

    @property
    def room_id(self) -> int:
        """The id of the stack's only room."""
        [room_id] = self.rooms.values()
        return room_id

    def api_reservations(self) -> list[dict]:
        response = self.api.get(f"/api/v1/reservations?room={self.room_id}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()["reservations"]


# --- mail: a real local SMTP server whose inbox tests read ----------------------------------------


class SmtpInbox:
    """What a local aiosmtpd server received: (envelope recipients, parsed message) pairs.

    `raw` keeps each mail's bytes as they arrived and `options` its MAIL FROM options, so a
    test can see what went over the wire (7-bit, or 8BITMIME announced).
    """

    def __init__(self):
        self.messages: list = []
        self.raw: list[bytes] = []
        self.options: list[list[str]] = []
        self.url = ""

    async def handle_DATA(self, server, session, envelope):
        import email
        import email.policy

        content = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        self.raw.append(content)
        self.options.append(list(envelope.mail_options))
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 5.0) -> list:
        """Poll until `count` messages arrived (SMTP hands over asynchronously), or fail."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.messages) >= count, f"expected {count} messages, got {len(self.messages)}"
        return self.messages

    def invitations(self, count: int | None = None) -> list[ReceivedInvitation]:
        """Every invitation received (after waiting for `count` mails), each parsed and checked by `read_mail`."""
        if count is not None:
            self.wait_for(count)
        read = [read_mail(rcpts, message, raw, options)
                for (rcpts, message), raw, options in zip(self.messages, self.raw, self.options, strict=True)]
        return [invitation for invitation in read if invitation is not None]


@dataclasses.dataclass
class ReceivedInvitation:
    """An iMIP mail as a calendar client reads it (`read_mail`)."""

    recipients: list[str]  # the envelope's
    message: object  # email.message.EmailMessage
    calendar: object  # icalendar.Calendar
    events: list  # its VEVENTs

    @property
    def event(self):
        [event] = self.events
        return event

    @property
    def method(self) -> str:
        return str(self.calendar["METHOD"])

    @property
    def uid(self) -> str:
        return str(self.event["UID"])

    @property
    def sequence(self) -> int:
        return int(self.event["SEQUENCE"])

    @property
    def organiser(self) -> str:
        return str(self.event["ORGANIZER"]).removeprefix("mailto:")

    @property
    def location(self) -> str:
        return str(self.event["LOCATION"])

    @property
    def attendees(self) -> list[str]:
        return [str(a).removeprefix("mailto:") for a in _as_list(self.event.get("ATTENDEE"))]

    @property
    def start(self) -> datetime:
        return self.event.decoded("DTSTART")

    @property
    def end(self) -> datetime:
        return self.event.decoded("DTEND")


def _as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


def read_mail(recipients: list[str], message, raw: bytes, options: list[str]) -> ReceivedInvitation | None:
    """Read a received mail as a strict client would; None for a plain mail (a check-in notice).

    Asserts what every client needs to file an invitation (RFC 5545, 5546, 6047): a 7-bit body
    or 8BITMIME announced; one text/calendar part whose `method` is the METHOD; in every
    VEVENT a UID, SEQUENCE, DTSTAMP, an ORGANIZER that is the From address or names it in
    SENT-BY, ATTENDEEs that include every envelope recipient, and zoned DTSTART < DTEND with
    a VTIMEZONE for every TZID.
    """
    from email.utils import parseaddr

    from icalendar import Calendar

    assert max(raw, default=0) < 0x80 or "BODY=8BITMIME" in options, "an 8-bit body without 8BITMIME"
    parts = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    if not parts:
        return None
    [part] = parts
    calendar = Calendar.from_ical(part.get_content())
    method = str(calendar["METHOD"])
    assert method in ("REQUEST", "CANCEL") and part.get_param("method") == method
    zones = {str(tz["TZID"]) for tz in calendar.walk("VTIMEZONE")}
    events = calendar.walk("VEVENT")
    assert events, "no VEVENT"
    sender = parseaddr(str(message["From"]))[1].lower()
    for event in events:
        assert str(event["UID"]) and int(event["SEQUENCE"]) >= 0 and event.decoded("DTSTAMP").tzinfo is not None
        organiser = event["ORGANIZER"]
        assert str(organiser).lower().startswith("mailto:")
        if str(organiser).lower() != f"mailto:{sender}":
            assert str(organiser.params.get("SENT-BY", "")).lower() == f"mailto:{sender}", "From is not the organiser"
        attendees = {str(a).lower().removeprefix("mailto:") for a in _as_list(event.get("ATTENDEE"))}
        assert {r.lower() for r in recipients} <= attendees, f"{recipients} not all among the ATTENDEEs {attendees}"
        for name in ("DTSTART", "DTEND"):
            assert event.decoded(name).tzinfo is not None, f"a floating {name}"
            tzid = event[name].params.get("TZID")
            assert tzid is None or tzid in zones, f"no VTIMEZONE for {tzid}"
        assert event.decoded("DTSTART") < event.decoded("DTEND")
    return ReceivedInvitation(recipients=recipients, message=message, calendar=calendar, events=events)


# --- the browser: screenshots and accessibility checks (tests/browser) ---------------------------

ARTIFACTS = ROOT / "test-artifacts"
AXE = ROOT / "tests" / "browser" / "axe.min.js"
BLOCKING_IMPACTS = ("serious", "critical")


def sign_in_browser(page, stack: Stack, email: str = "alice@example.com", next_path: str = "/") -> None:
    """Sign in as a person would: the app sends the browser to the emulator's account picker."""
    page.goto(f"{stack.url}/signin?next={next_path}")
    page.wait_for_url(f"{stack.emulator.url}/o/oauth2/v2/auth*")
    page.get_by_role("button", name=email).click()
    page.wait_for_url(f"{stack.url}{next_path}*")


def screenshot(page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def assert_accessible(page, *, context: str | None = None) -> list[dict]:
    """Run axe-core (vendored, never fetched) on the page; fail on serious or critical violations."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, which the page's CSP does not govern; a
        # <script> tag with the source inline (add_script_tag) would be refused, as it should.
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    results = page.evaluate("""async (selector) => await window.axe.run(selector || document, {
        resultTypes: ['violations'],
        runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']},
    })""", context)
    blocking = [v for v in results["violations"] if v["impact"] in BLOCKING_IMPACTS]
    report = "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(n["html"][:160] for n in v["nodes"][:5])
        for v in blocking
    )
    assert not blocking, f"accessibility violations on {page.url}:\n{report}"
    return results["violations"]


def zone_at_midday(now: datetime | None = None) -> str:
    """A fixed-offset zone where it is now 12:xx, whatever the hour the tests run.

    Pages that ask "free from now" depend on the hour; a room in this zone is inside any
    bookable hours and far from midnight.
    """
    now = now or datetime.now(UTC)
    offset = 12 - now.hour  # -11..+12; Etc/GMT signs are inverted (Etc/GMT-5 is UTC+5)
    offset = max(-11, min(12, offset))
    return "Etc/GMT" + ("" if offset == 0 else f"{-offset:+d}")

"""Shared fixtures: real Redis, real SQLite and PostgreSQL, each test isolated.

Every test that asks for `app` runs once per database in ROOMBRIDGE_TEST_DATABASES
(default "sqlite,postgresql"). SQLite tests get a fresh copy of a migrated template file;
PostgreSQL tests share one migrated database, truncated after each test. Redis tests use
one logical database, flushed before and after each test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time

import hypothesis
import pytest
import sqlalchemy as sa
from click.testing import Result

from roombridge import db, migrate
from roombridge.db import Base
from webapp import create_app

# CI replays the same examples every run (a red run must be reproducible); elsewhere, explore.
hypothesis.settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

REDIS_URL = os.environ.get("ROOMBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
POSTGRES_SERVER = os.environ.get("ROOMBRIDGE_TEST_POSTGRES_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
# One database per test process (overridable), so two runs on one server never drop each other's.
POSTGRES_DB = os.environ.get("ROOMBRIDGE_TEST_POSTGRES_DB", f"roombridge_test_{os.getpid()}")
DATABASES = [d for d in os.environ.get("ROOMBRIDGE_TEST_DATABASES", "sqlite,postgresql").split(",") if d]

SERVICE_ACCOUNT = "roombridge@demo-project.iam.gserviceaccount.com"
# ENV and AUTH_MODE said explicitly: the defaults are production and OIDC (fail closed).
TEST_SETTINGS = dict(ENV="test", AUTH_MODE="dev", SECRET_KEY="test-secret",
                     ADMIN_EMAILS=frozenset({"admin@example.com"}))


def _migrated_app(database_url: str):
    app = create_app(DATABASE_URL=database_url, REDIS_URL=REDIS_URL, **TEST_SETTINGS)
    migrate.upgrade(app)
    db.engine(app).dispose()
    return app


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    _migrated_app(f"sqlite:///{path}")
    return str(path)


@pytest.fixture(scope="session")
def postgres_url():
    admin = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {POSTGRES_DB}"))
    admin.dispose()
    url = f"{POSTGRES_SERVER}/{POSTGRES_DB}"
    _migrated_app(url)
    yield url
    admin = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "roombridge.sqlite3"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    engine = sa.create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def redis_url():
    from redis import Redis

    conn = Redis.from_url(REDIS_URL)
    conn.flushdb()
    yield REDIS_URL
    conn.flushdb()
    conn.close()


@pytest.fixture
def make_app(database_url, redis_url):
    """Build an app on this test's database and Redis; keyword arguments override settings."""
    apps = []

    def make(**overrides):
        settings = {**TEST_SETTINGS, "DATABASE_URL": database_url, "REDIS_URL": redis_url, **overrides}
        app = create_app(**settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        db.engine(app).dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def session(app):
    """A database session inside an app context, for domain tests."""
    with app.app_context():
        yield db.session()


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


def kill_worker(worker: subprocess.Popen) -> None:
    """SIGKILL the worker and every process it started."""
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait(10)


def invoke_ok(runner, args: list[str]) -> Result:
    """Run a CLI command and fail with its output when it does not exit 0."""
    result = runner.invoke(args=args)
    assert result.exit_code == 0, f"{args} exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
    return result


# --- Google: the emulator, a live app server it can push to, and jobs run for real ---------------


@pytest.fixture
def emulator():
    """A fresh local Google Calendar on a real port (see emulator/__init__.py)."""
    from emulator import EmulatorServer

    server = EmulatorServer(port=0, push_delay=0.0, push_retry_base=0.05)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def service_account_file(emulator, tmp_path) -> str:
    """The key of a service account registered with the emulator, written where the app reads it."""
    import json

    key = emulator.create_service_account(SERVICE_ACCOUNT)
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(key))
    return str(path)


@pytest.fixture
def make_google_app(make_app, emulator, service_account_file):
    """make_google_app(**settings): an app wired to the emulator as it would be to Google (room mode)."""

    def make(**overrides):
        return make_app(GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file,
                        GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url, **overrides)

    return make


@pytest.fixture
def google_app(make_google_app):
    return make_google_app()


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


@pytest.fixture
def live_server_factory():
    """live_server_factory(app) -> LiveServer started for this test."""
    servers = []

    def start(app) -> LiveServer:
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def run_jobs(app, queues=("push", "sync", "channels", "default"), max_jobs: int | None = None) -> int:
    """Run queued jobs in this process with a real RQ worker until the queues are empty.

    Returns how many jobs ran (rq 3 keeps the counts in Redis, not on the worker object).
    """
    from rq import SimpleWorker

    from roombridge.queue import queue, redis

    with app.app_context():
        worker = SimpleWorker([queue(q) for q in queues], connection=redis())
        worker.work(burst=True, max_jobs=max_jobs)
        worker.refresh()
        return worker.successful_job_count + worker.failed_job_count


# --- Mail: a real local SMTP server whose inbox tests read ----------------------------------------


class SmtpInbox:
    """What a local aiosmtpd server received: (envelope recipients, parsed message) pairs."""

    def __init__(self):
        self.messages: list = []
        self.url = ""

    async def handle_DATA(self, server, session, envelope):
        import email
        import email.policy

        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 5.0) -> list:
        """Poll until `count` messages arrived (SMTP hands over asynchronously), or fail."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.messages) >= count, f"expected {count} messages, got {len(self.messages)}"
        return self.messages


@pytest.fixture
def smtp_server():
    """A real SMTP server on a free local port; `.url` is its SMTP_URL, `.messages` its inbox."""
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = SmtpInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    yield inbox
    controller.stop()


# --- a Redis server of a test's own (moved here from tests/webapp/test_health.py for reuse) -------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis_server(port: int, *options: str) -> subprocess.Popen:
    """A redis-server on loopback `port`, without persistence, with extra `options`; waits until it listens."""
    import socket

    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def own_redis():
    """(url, stop, restart) of a redis-server of this test's own, so stopping it disturbs nobody else."""
    port = _free_port()

    def start():
        return start_redis_server(port)

    server = {"proc": start()}

    def stop():
        server["proc"].terminate()
        server["proc"].wait(10)

    def restart():
        server["proc"] = start()

    yield f"redis://127.0.0.1:{port}/0", stop, restart
    if server["proc"].poll() is None:
        stop()

"""Shared fixtures: real Redis, real SQLite and PostgreSQL, each test isolated.

Every test that asks for `app` runs once per database in ROOMBRIDGE_TEST_DATABASES
(default "sqlite,postgresql"). SQLite tests get a fresh copy of a migrated template file;
PostgreSQL tests share one migrated database, truncated after each test. Redis tests use
one logical database, flushed before and after each test.
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest
import sqlalchemy as sa
from click.testing import Result

from roombridge import db, migrate
from roombridge.db import Base
from webapp import create_app

REDIS_URL = os.environ.get("ROOMBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
POSTGRES_SERVER = os.environ.get("ROOMBRIDGE_TEST_POSTGRES_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
POSTGRES_DB = "roombridge_test"
DATABASES = [d for d in os.environ.get("ROOMBRIDGE_TEST_DATABASES", "sqlite,postgresql").split(",") if d]

TEST_SETTINGS = dict(ENV="test", SECRET_KEY="test-secret", ADMIN_EMAILS=frozenset({"admin@example.com"}))


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
def postgres_url() -> str:
    admin = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {POSTGRES_DB}"))
    admin.dispose()
    url = f"{POSTGRES_SERVER}/{POSTGRES_DB}"
    _migrated_app(url)
    return url


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

    key = emulator.create_service_account("roombridge@demo-project.iam.gserviceaccount.com")
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(key))
    return str(path)


@pytest.fixture
def google_app(make_app, emulator, service_account_file):
    """An app wired to the emulator exactly as it would be to Google (room mode)."""
    return make_app(
        GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file,
        GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
    )


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
    """Run queued jobs in this process with a real RQ worker until the queues are empty."""
    from rq import SimpleWorker

    from roombridge.queue import queue, redis

    with app.app_context():
        worker = SimpleWorker([queue(q) for q in queues], connection=redis())
        worker.work(burst=True, max_jobs=max_jobs)
        return worker.successful_job_count + worker.failed_job_count

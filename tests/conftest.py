"""Shared fixtures: real Redis, real SQLite and PostgreSQL, each test isolated.

Every test that asks for `app` runs once per database in ROOMBRIDGE_TEST_DATABASES
(default "sqlite,postgresql"). SQLite tests get a fresh copy of a migrated template file;
PostgreSQL tests share one migrated database, truncated after each test. Redis tests use
one logical database, flushed before and after each test.
"""

from __future__ import annotations

import os
import shutil

import hypothesis
import pytest
import sqlalchemy as sa

from roombridge import db, migrate
from roombridge.db import Base
from tests.support import (
    DATABASES,
    FUZZ_EXAMPLES,
    POSTGRES_DB,
    POSTGRES_SERVER,
    REDIS_URL,
    SERVICE_ACCOUNT,
    TEST_SETTINGS,
    LiveServer,
    SmtpInbox,
    free_port,
    start_redis_server,
)
from webapp import create_app

# CI replays the same examples every run (a red run must be reproducible); elsewhere, explore.
# `make fuzz` (HYPOTHESIS_PROFILE=fuzz) explores with many more examples (tests.support.examples).
hypothesis.settings.register_profile("ci", derandomize=True)
hypothesis.settings.register_profile("fuzz", derandomize=False, max_examples=FUZZ_EXAMPLES, deadline=None)
if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz":
    hypothesis.settings.load_profile("fuzz")
elif os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")


def pytest_collection_modifyitems(items):
    """Tests marked slow run first: under pytest-xdist (`make test` runs two workers) a long test
    started last would leave one worker idle while it finishes."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: otherwise as collected


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
        app.testing = True  # the test client raises what the app raised, instead of a 500 page
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


# --- Google: the emulator, and a live app server it can push to ----------------------------------


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


# --- Mail: a real local SMTP server whose inbox tests read ----------------------------------------


@pytest.fixture
def smtp_server():
    """A real SMTP server on a free local port; `.url` is its SMTP_URL, `.messages` its inbox.

    At the end every mail it received must read as a well-formed invitation (or a plain mail).
    """
    from aiosmtpd.controller import Controller

    port = free_port()
    inbox = SmtpInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    yield inbox
    controller.stop()
    inbox.invitations()  # every mail a test made, read as a strict client would (tests/support.py)


# --- a Redis server of a test's own ---------------------------------------------------------------


@pytest.fixture
def own_redis():
    """(url, stop, restart) of a redis-server of this test's own, so stopping it disturbs nobody else."""
    port = free_port()

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

"""Fault tests: real processes killed, real databases made unavailable, real errors from the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import DATABASES, POSTGRES_SERVER

REPO = Path(__file__).resolve().parents[2]


def worker_env(app, **extra: str) -> dict[str, str]:
    """The environment of a worker process that shares the app's database, Redis and Google."""
    config = app.config["ROOMBRIDGE"]
    return {**os.environ, "ENV": "test", "SECRET_KEY": "test-secret", "DATABASE_URL": config.DATABASE_URL,
            "REDIS_URL": config.REDIS_URL, "GOOGLE_SERVICE_ACCOUNT_FILE": config.GOOGLE_SERVICE_ACCOUNT_FILE,
            "GOOGLE_CALENDAR_API_URL": config.GOOGLE_CALENDAR_API_URL, **extra}


def start_worker(app, *queues: str, burst: bool = False) -> subprocess.Popen:
    """`flask --app wsgi worker` as its own process, as the Procfile runs it."""
    args = [sys.executable, "-m", "flask", "--app", "wsgi", "worker", *(["--burst"] if burst else []), *queues]
    # Its own process group: the worker forks RQ's scheduler, and a kill must take both, as the
    # death of a machine or a container would (killing only the worker orphans the scheduler).
    return subprocess.Popen(args, cwd=REPO, env=worker_env(app), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)



class PostgresDatabase:
    """A PostgreSQL database of this test's own, which the test may make unavailable and bring back."""

    def __init__(self):
        self.name = f"roombridge_fault_{uuid.uuid4().hex[:10]}"
        self.url = f"{POSTGRES_SERVER}/{self.name}"
        self.admin = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        self._admin(f"CREATE DATABASE {self.name}")

    def _admin(self, sql: str, **params) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(sql), params)

    def make_unavailable(self) -> None:
        """New connections are refused and every open one is cut, as when the server goes away."""
        self._admin(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS false")
        self._admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name", name=self.name)

    def bring_back(self) -> None:
        self._admin(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS true")

    def drop(self) -> None:
        self.bring_back()
        self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        self.admin.dispose()


@pytest.fixture
def own_postgres():
    if "postgresql" not in DATABASES:
        pytest.skip("PostgreSQL is not among ROOMBRIDGE_TEST_DATABASES")
    database = PostgresDatabase()
    yield database
    database.drop()

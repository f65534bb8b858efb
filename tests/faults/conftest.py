"""Fault tests: real processes killed, real databases made unavailable, real errors from the emulator."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.support import DATABASES, POSTGRES_SERVER


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

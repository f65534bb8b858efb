"""Database engine and sessions.

One engine per app; one session per app context (a request, a job, a CLI command),
closed when the context ends. Domain code takes the session as an argument.

SQLite, the embedded default, allows one writer at a time; in WAL mode readers never
wait. Transactions are owned by units of work (roombridge/unit_of_work.py): one that may
write begins with BEGIN IMMEDIATE on SQLite (`begin_write_transaction`, called there only).
Plain reads use an ordinary deferred BEGIN and hold no lock while, say, a job calls Google.
A trigger (see the initial migration) refuses overlapping live reservations, as the
exclusion constraint does on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Flask, current_app, g
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

EXTENSION_KEY = "roombridge.db"


class UTCDateTime(sa.types.TypeDecorator):
    """An instant: aware UTC in Python, timestamptz on PostgreSQL, naive UTC text on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an instant (aware datetime) is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _serialise_sqlite(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _serialise_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get(WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


WRITE_OPTION = "roombridge_write"


def begin_write_transaction(session: Session) -> None:
    """Begin `session`'s (not yet open) transaction as a write: BEGIN IMMEDIATE on SQLite.

    Only the unit of work calls this (roombridge/unit_of_work.py): one rule, in one place.
    """
    if session.in_transaction():
        raise RuntimeError("a write transaction must begin before anything else in it")
    if session.get_bind().dialect.name == "sqlite":
        session.connection(execution_options={WRITE_OPTION: True})


def init_app(app: Flask, url: str) -> None:
    engine = make_engine(url)
    app.extensions[EXTENSION_KEY] = sessionmaker(engine, expire_on_commit=False)

    @app.teardown_appcontext
    def _close_session(_exc):
        session = g.pop("_db_session", None)
        if session is not None:
            session.close()


def session_factory(app: Flask | None = None) -> sessionmaker[Session]:
    return (app or current_app).extensions[EXTENSION_KEY]


def engine(app: Flask | None = None) -> Engine:
    return session_factory(app).kw["bind"]


def session() -> Session:
    """The session of the current app context."""
    if "_db_session" not in g:
        g._db_session = session_factory()()
    return g._db_session


def utcnow() -> datetime:
    return datetime.now(UTC)

"""Alembic, driven from the app: `flask --app wsgi db upgrade` and friends."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask

from roombridge import db

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _alembic_config(connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(app: Flask, revision: str = "head") -> None:
    # One transaction for the whole upgrade, committed when the block ends.
    with db.engine(app).begin() as connection:
        command.upgrade(_alembic_config(connection), revision)


def downgrade(app: Flask, revision: str) -> None:
    with db.engine(app).begin() as connection:
        command.downgrade(_alembic_config(connection), revision)


def revision(app: Flask, message: str, autogenerate: bool = True) -> None:
    with db.engine(app).connect() as connection:
        command.revision(_alembic_config(connection), message=message, autogenerate=autogenerate)

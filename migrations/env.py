"""Alembic environment. Run through `flask --app wsgi db upgrade`, which hands us a connection."""

from alembic import context

from roombridge import models  # noqa: F401  (registers the tables on Base.metadata)
from roombridge.db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `flask --app wsgi db upgrade`")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()

"""The `flask --app wsgi ...` commands: schema, worker, scheduler, and the admin verbs."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from roombridge import migrate

db_cli = AppGroup("db", help="Create or upgrade the database schema.")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Create or upgrade the schema to REVISION (default: the newest)."""
    migrate.upgrade(current_app, revision)
    click.echo(f"database at {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    migrate.downgrade(current_app, revision)


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
def db_revision(message: str) -> None:
    """Write a new migration from the difference between the models and the database."""
    migrate.revision(current_app, message)


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.argument("queues", nargs=-1)
def worker_command(burst: bool, queues: tuple[str, ...]) -> None:
    """Run an RQ worker on the named queues (default: all, most urgent first)."""
    from rq import SimpleWorker

    from jobs import set_worker_app
    from roombridge.queue import QUEUE_NAMES, queue

    app = current_app._get_current_object()
    set_worker_app(app)
    queues_to_watch = [queue(name) for name in (queues or QUEUE_NAMES)]
    worker = SimpleWorker(queues_to_watch, connection=queues_to_watch[0].connection)
    worker.work(burst=burst, with_scheduler=True)


@click.command("scheduler")
def scheduler_command() -> None:
    """Run the periodic scheduler (only one leads at a time, see jobs/schedule.py)."""
    from jobs.schedule import run_scheduler

    run_scheduler(current_app._get_current_object())


def init_app(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(worker_command)
    app.cli.add_command(scheduler_command)

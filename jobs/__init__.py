"""RQ jobs: functions that take ids, never objects, and run inside an app context.

`job(...)` is the one decorator every job uses. It fixes the queue, the timeout and how
long a failed job is kept, and gives the function an ``enqueue`` method that uses the
current app's Redis. Jobs are thin: they take ids, open the unit of work (or call the core
function that opens its own) and call the core.

The core never imports this package: it announces what it did after each commit
(roombridge/unit_of_work.py), and `install(app)` subscribes the enqueues that turn those
announcements into jobs. Every app that may run core code installs them.

The worker (`flask --app wsgi worker`) is an RQ SimpleWorker holding one app for the
life of the process; every job runs in a fresh app context of that app, so it gets its
own database session, closed when the job ends. Called inside an app context (tests,
the CLI), a job uses that app. A job run with no app at all builds `worker_app()`: the
core's app, without the web package.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Flask, current_app, has_app_context
from rq import Retry
from rq.job import Job

from roombridge.app import create_core_app
from roombridge.queue import queue as named_queue
from roombridge.unit_of_work import ChannelOpened, InvitationDue, ReservationChanged, SyncRequested, subscribe

DEFAULT_TIMEOUT = 300
FAILURE_TTL = 7 * 24 * 3600  # failed jobs stay a week for admins to see and retry
RESULT_TTL = 3600

_worker_app: Flask | None = None


def set_worker_app(app: Flask) -> None:
    global _worker_app
    _worker_app = app


def _app_for_job() -> Flask:
    global _worker_app
    if has_app_context():
        return current_app._get_current_object()
    if _worker_app is None:
        _worker_app = worker_app()
    return _worker_app


def worker_app() -> Flask:
    """An app for running jobs: the core and these jobs' subscriptions, no web package."""
    app = create_core_app()
    install(app)
    return app


def install(app: Flask) -> None:
    """Subscribe, in `app`, the jobs that the core's announcements ask for."""
    from jobs.channels import on_channel_opened
    from jobs.checkin import on_checkin_notice_due
    from jobs.reservations import on_invitation_due, on_reservation_changed
    from jobs.sync import on_sync_requested
    from roombridge.checkin import CheckinNoticeDue

    subscribe(app, ReservationChanged, on_reservation_changed)
    subscribe(app, InvitationDue, on_invitation_due)
    subscribe(app, SyncRequested, on_sync_requested)
    subscribe(app, ChannelOpened, on_channel_opened)
    subscribe(app, CheckinNoticeDue, on_checkin_notice_due)


def job(
    queue: str,
    *,
    timeout: int = DEFAULT_TIMEOUT,
    failure_ttl: int = FAILURE_TTL,
    retry: Retry | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _app_for_job().app_context():
                return fn(*args, **kwargs)

        def enqueue(*args: Any, job_id: str | None = None, **options: Any) -> Job:
            target = named_queue(queue)
            # One round trip: left alone, RQ registers the queue and saves the job in two (a booking
            # and a push that asks for a sync each pay for it while their caller waits).
            with target.connection.pipeline() as pipe:
                job = target.enqueue(run, *args, job_id=job_id, pipeline=pipe, **_options(options))
                pipe.execute()
            return job

        def enqueue_at(moment: datetime, *args: Any, job_id: str | None = None, **options: Any) -> Job:
            """Run at `moment` (RQ's scheduler, inside the worker, moves it to the queue then)."""
            return named_queue(queue).enqueue_at(moment, run, *args, job_id=job_id, **_options(options))

        def _options(options: dict[str, Any]) -> dict[str, Any]:
            options.setdefault("job_timeout", timeout)
            options.setdefault("failure_ttl", failure_ttl)
            options.setdefault("result_ttl", RESULT_TTL)
            if retry is not None:
                options.setdefault("retry", retry)
            return options

        run.enqueue = enqueue  # type: ignore[attr-defined]
        run.enqueue_at = enqueue_at  # type: ignore[attr-defined]
        run.queue_name = queue  # type: ignore[attr-defined]
        return run

    return decorate

"""The job decorator, the worker's app context and the one-leader scheduler."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa
from flask import current_app
from rq import SimpleWorker

from jobs import job, schedule
from roombridge import db
from roombridge.models import AuditEntry, audit
from roombridge.queue import queue, redis
from tests.support import ROOT, start_worker, stop_worker, wait_until, worker_env


@job("default", timeout=30)
def record_in_audit_log(actor: str) -> str:
    """A job that needs the app context and the database, as real jobs do."""
    session = db.session()
    audit(session, actor, "test.ran", "job", where=current_app.name)
    session.commit()
    return actor


def run_all_jobs(app) -> None:
    with app.app_context():
        worker = SimpleWorker([queue("default")], connection=redis())
        worker.work(burst=True)


def test_enqueued_job_runs_in_an_app_context_with_its_own_session(app):
    with app.app_context():
        enqueued = record_in_audit_log.enqueue("tester@example.com")
        assert enqueued.origin == "default"
        assert enqueued.timeout == 30
        assert enqueued.failure_ttl == 7 * 24 * 3600
    run_all_jobs(app)
    with app.app_context():
        entries = db.session().scalars(sa.select(AuditEntry)).all()
        assert [(e.actor, e.action) for e in entries] == [("tester@example.com", "test.ran")]
        assert enqueued.get_status(refresh=True) == "finished"


def test_only_one_scheduler_leads(app):
    first, second = schedule.LeaderLock(app, 5), schedule.LeaderLock(app, 5)
    assert first.acquire_or_renew()
    assert not second.acquire_or_renew()
    assert first.acquire_or_renew()  # renewal by the holder
    first.release()
    assert second.acquire_or_renew()


def test_periodic_jobs_enqueue_once_per_slot(app, monkeypatch):
    monkeypatch.setattr(
        schedule,
        "PERIODIC",
        [schedule.Periodic("audit-heartbeat", "tests.jobs.test_wiring:record_heartbeat", "SCHEDULER_TICK_SECONDS")],
    )
    now = 1_000_000.0  # SCHEDULER_TICK_SECONDS defaults to 30: slots of 30 s
    assert schedule.enqueue_due(app, now) == ["periodic-audit-heartbeat-33333"]
    assert schedule.enqueue_due(app, now + 10) == []  # same slot, even from another leader
    assert schedule.enqueue_due(app, now + 30) == ["periodic-audit-heartbeat-33334"]
    run_all_jobs(app)
    with app.app_context():
        assert db.session().scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 2


@job("default")
def record_heartbeat() -> None:
    session = db.session()
    audit(session, "system", "heartbeat", "scheduler")
    session.commit()


# --- SIGTERM: the processes end cleanly and free their locks ------------------------------------


def _scheduler_locks(app) -> list[bytes]:
    with app.app_context():
        return redis().keys("rq:scheduler-lock:*")


@pytest.mark.slow
def test_the_scheduler_process_frees_its_leader_lock_on_sigterm(app):
    scheduler = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "scheduler"], cwd=ROOT,
                                 env=worker_env(app), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        with app.app_context():
            wait_until(lambda: redis().exists(schedule.LEADER_KEY), timeout=30, what="the scheduler to lead")
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(15) == 0  # an exit of its own, not death by the signal (-15)
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait(5)
    with app.app_context():
        # Released, not left to expire: a scheduler started now leads at once.
        assert not redis().exists(schedule.LEADER_KEY)


@pytest.mark.slow
def test_the_worker_process_frees_rq_schedulers_lock_on_sigterm(app):
    worker = start_worker(app)
    try:
        wait_until(lambda: _scheduler_locks(app), timeout=30, what="the worker's RQ scheduler to take its lock")
        with app.app_context():  # idle in its loop: RQ's signal handlers are installed by then
            wait_until(lambda: [k for k in redis().keys("rq:worker:*") if redis().hget(k, "state") == b"idle"],
                       timeout=30, what="the worker to wait for jobs")
    finally:
        stop_worker(worker)  # SIGTERM to its process group, as honcho and container runtimes do
    assert worker.returncode == 0
    assert _scheduler_locks(app) == []

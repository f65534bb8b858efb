"""The periodic schedule, as data, and the one scheduler process that runs it.

RQ's own cron has no leader lock, so two scheduler processes would enqueue everything
twice. Ours takes a Redis lock (SET NX PX with a random value, renewed every tick): only
the holder enqueues; a second scheduler waits and takes over within one lock timeout if
the leader dies. Each periodic job is enqueued under a stable job id per time slot, so
even a brief double leadership cannot enqueue one slot twice.

SIGTERM (a deploy, honcho's Ctrl-C, a container stop) ends the process cleanly: Python's
default SIGTERM kills it without running `finally`, which left the leader lock to expire on
its own and made the next scheduler wait out its TTL. `stop_on_termination` turns SIGTERM
and SIGINT into a stop between ticks, and the lock is released on the way out.
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
import time
from dataclasses import dataclass

from flask import Flask

from roombridge.queue import RedisLock, redis

log = logging.getLogger(__name__)

LEADER_KEY = "roombridge:scheduler:leader"


@dataclass(frozen=True)
class Periodic:
    id: str  # stable: the job id of each run derives from it
    func: str  # "module:function", a job made with jobs.job
    every_setting: str  # the Config field that holds the interval in seconds


# Filled in by the features that need a heartbeat (safety-net sync, channel renewal).
PERIODIC: list[Periodic] = [
    # Every tick: cheap when nothing is due; renewal moments are spread (roombridge/channels.py).
    Periodic("renew-channels", "jobs.channels:renew_channels", "SCHEDULER_TICK_SECONDS"),
    # Every tick: one indexed query; re-queues Google writes lost to a Redis outage (jobs/reservations.py).
    Periodic("requeue-stale-pending", "jobs.reservations:requeue_stale_pending", "SCHEDULER_TICK_SECONDS"),
    # Every tick: one indexed query; releases no-shows past their check-in deadline (roombridge/checkin.py).
    Periodic("release-no-shows", "jobs.checkin:release_no_shows", "SCHEDULER_TICK_SECONDS"),
    # Google drops a small share of pushes: the rolling safety net plans its sweeps each tick (roombridge/sweep.py).
    Periodic("safety-net-sync", "jobs.sync:safety_net_sync", "SAFETY_SYNC_INTERVAL_SECONDS"),
    # Every tick: the Google call log's buffer in Redis to its table, batch by batch (roombridge/call_log.py).
    Periodic("flush-google-calls", "jobs.call_log:flush_google_calls", "SCHEDULER_TICK_SECONDS"),
    # Every tick: the call log's rows past GOOGLE_CALL_LOG_RETENTION_DAYS, in batches; cheap when none are.
    Periodic("purge-google-calls", "jobs.call_log:purge_google_calls", "SCHEDULER_TICK_SECONDS"),
    # Hourly: the Insights rollup of days and months (roombridge/insights.py); idempotent, so a rerun is harmless.
    Periodic("insights-rollup", "jobs.insights:refresh_insights_rollup", "INSIGHTS_ROLLUP_INTERVAL_SECONDS"),
]


def _resolve(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def enqueue_due(app: Flask, now: float | None = None) -> list[str]:
    """Enqueue every periodic job whose slot has come; returns the job ids enqueued."""
    now = time.time() if now is None else now
    conn = redis(app)
    enqueued = []
    for periodic in PERIODIC:
        every = float(getattr(app.config["ROOMBRIDGE"], periodic.every_setting))
        slot = int(now // every)
        # SET NX per slot: a slot is enqueued once, whoever the leader is.
        if conn.set(f"roombridge:schedule:{periodic.id}:{slot}", 1, nx=True, ex=int(every) * 2 + 60):
            job_id = f"periodic-{periodic.id}-{slot}"
            with app.app_context():
                _resolve(periodic.func).enqueue(job_id=job_id)
            enqueued.append(job_id)
    return enqueued


class LeaderLock(RedisLock):
    """The scheduler's leadership, renewed by the scheduler's own tick (no heartbeat thread)."""

    def __init__(self, app: Flask, ttl_seconds: float):
        super().__init__(redis(app), LEADER_KEY, ttl_seconds)

    def acquire_or_renew(self) -> bool:
        # Renew only if we still hold it (compare-and-set in Lua), else try to take it.
        return self.renew() or bool(self.conn.set(self.key, self.value, nx=True, px=self.ttl_ms))


def stop_on_termination() -> threading.Event:
    """An event set by SIGTERM or SIGINT (instead of dying at once): the scheduler stops at it."""
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        log.info("scheduler stopping on %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def run_scheduler(app: Flask, *, max_ticks: int | None = None, stop: threading.Event | None = None) -> None:
    tick = float(app.config["ROOMBRIDGE"].SCHEDULER_TICK_SECONDS)
    lock = LeaderLock(app, ttl_seconds=max(tick * 3, 10))
    stop = stop or threading.Event()
    ticks = 0
    try:
        while (max_ticks is None or ticks < max_ticks) and not stop.is_set():
            ticks += 1
            try:
                if lock.acquire_or_renew():
                    for job_id in enqueue_due(app):
                        log.info("scheduler enqueued %s", job_id)
                else:
                    log.debug("another scheduler leads; standing by")
            except Exception:  # Redis down: keep the process, try again next tick
                log.exception("scheduler tick failed")
            if max_ticks is None or ticks < max_ticks:
                stop.wait(tick)
    finally:
        try:
            lock.release()
        except Exception:
            log.warning("could not release the scheduler lock; it expires by itself")

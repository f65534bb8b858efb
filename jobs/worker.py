"""The worker the Procfile runs (`flask --app wsgi worker`): RQ's SimpleWorker, quick to recover from Redis outages.

RQ runs its scheduler, which moves delayed jobs to their queues (RQ's retries, each channel's
own renewal), in a child process of the worker. A Redis error kills that child, and RQ starts
it again only in its maintenance pass, every ten minutes; an idle worker also waits in one
BLPOP of ~400 s, and backs off up to 60 s between reconnection attempts. So after an outage,
retries and scheduled renewals stalled for minutes. This worker

- checks its scheduler at every heartbeat of its dequeue loop, which comes at least every
  DEQUEUE_TIMEOUT_SECONDS even when idle, and starts it again if it is not running (once it
  takes RQ's scheduler lock; not in burst mode, where RQ runs no scheduler process);
- tries Redis again at least every MAX_RECONNECT_WAIT_SECONDS during an outage;
- outlives an outage that begins outside RQ's dequeue wait (between jobs, in RQ's
  maintenance, while recording a job's end): RQ's loop ends the whole worker on any error
  there, with exit status 0, so a supervisor would not even restart it. Those steps are
  bookkeeping; the dequeue wait that follows reconnects. A job whose end could not be
  recorded is left to RQ's registry cleaning (an abandoned job), as if the worker had died.

Delayed work so resumes within about DEQUEUE_TIMEOUT_SECONDS + MAX_RECONNECT_WAIT_SECONDS of
Redis returning (tests/faults/test_redis_outage.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker

DEQUEUE_TIMEOUT_SECONDS = 10
MAX_RECONNECT_WAIT_SECONDS = 5.0
SCHEDULER_CHECK_SECONDS = 5.0  # a scheduler that another worker runs costs one lock check this often
REDIS_LOST = (RedisConnectionError, RedisTimeoutError)


class Worker(SimpleWorker):
    max_connection_wait_time = MAX_RECONNECT_WAIT_SECONDS

    def work(self, burst: bool = False, *args, **kwargs) -> bool:
        self._burst = burst
        self._next_scheduler_check = 0.0
        return super().work(burst, *args, **kwargs)

    @property
    def dequeue_timeout(self) -> int:
        return DEQUEUE_TIMEOUT_SECONDS

    def heartbeat(self, *args, **kwargs) -> None:
        if args or kwargs:  # inside a job's bookkeeping: RQ's own
            super().heartbeat(*args, **kwargs)
            return
        # Without arguments: the loops' own heartbeat, between jobs (never inside one:
        # starting the scheduler forks this process).
        with self._outliving_redis("heartbeat"):
            super().heartbeat()
            self._keep_scheduler_running()

    def check_for_suspension(self, burst: bool) -> None:
        with self._outliving_redis("suspension check"):
            super().check_for_suspension(burst)

    def run_maintenance_tasks(self) -> None:
        with self._outliving_redis("maintenance"):  # tried again next loop: last_cleaned_at is not moved on
            super().run_maintenance_tasks()

    def execute_job(self, job, queue) -> None:
        with self._outliving_redis(f"job {job.id}"):
            super().execute_job(job, queue)

    @contextmanager
    def _outliving_redis(self, step: str) -> Iterator[None]:
        try:
            yield
        except REDIS_LOST as error:
            self.log.error("Worker %s: Redis lost during %s (%s); carrying on", self.name, step, error)
            time.sleep(1)  # then the dequeue wait reconnects, with its own backoff

    def _keep_scheduler_running(self) -> None:
        scheduler = self.scheduler
        if scheduler is None or getattr(self, "_burst", True) or self._stop_requested:
            return
        process = scheduler._process
        if process is not None and process.is_alive():
            return
        if time.monotonic() < self._next_scheduler_check:
            return
        self._next_scheduler_check = time.monotonic() + SCHEDULER_CHECK_SECONDS
        if scheduler.acquire_locks(auto_start=True):
            self.log.info("Worker %s: scheduler started for %s", self.name, ", ".join(sorted(scheduler.acquired_locks)))

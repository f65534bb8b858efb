"""The worker the Procfile runs (`flask --app wsgi worker`): RQ's SimpleWorker, quick to recover from Redis outages.

RQ runs its scheduler, which moves delayed jobs to their queues (RQ's retries, each channel's
own renewal), in a child process of the worker. A Redis error kills that child, and RQ starts
it again only in its maintenance pass, every ten minutes; an idle worker also waits in one
BLPOP of ~400 s, and backs off up to 60 s between reconnection attempts. So after an outage,
retries and scheduled renewals stalled for minutes. This worker

- checks its scheduler at every heartbeat of its dequeue loop, which comes at least every
  DEQUEUE_TIMEOUT_SECONDS even when idle, and starts it again if it is not running (once it
  takes RQ's scheduler lock; not in burst mode, where RQ runs no scheduler process);
- tries Redis again at least every MAX_RECONNECT_WAIT_SECONDS during an outage.

Delayed work so resumes within about DEQUEUE_TIMEOUT_SECONDS + MAX_RECONNECT_WAIT_SECONDS of
Redis returning (tests/faults/test_redis_outage.py).
"""

from __future__ import annotations

import time

from rq import SimpleWorker

DEQUEUE_TIMEOUT_SECONDS = 10
MAX_RECONNECT_WAIT_SECONDS = 5.0
SCHEDULER_CHECK_SECONDS = 5.0  # a scheduler that another worker runs costs one lock check this often


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
        super().heartbeat(*args, **kwargs)
        # Without arguments: the dequeue loop's own heartbeat, between jobs (never inside one:
        # starting the scheduler forks this process).
        if not args and not kwargs:
            self._keep_scheduler_running()

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

"""Redis and RQ wiring shared by the web app, the webhook and the jobs.

Queues have names so that a slow full sync never delays a booking's write to Google:

- ``write``: publish a reservation to Google (someone is waiting for "confirmed").
- ``sync``: mirror a room from Google.
- ``channels``: create, renew and stop watch channels; periodic safety nets.
- ``sweep``: the rolling safety net's syncs and first syncs of added rooms (roombridge/sweep.py):
  after everything above, so a sweep never delays a booking or a push.
- ``default``: anything else (e-mail).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import NoScriptError
from rq import Queue

log = logging.getLogger(__name__)

QUEUE_NAMES = ("write", "sync", "channels", "sweep", "default")
EXTENSION_KEY = "roombridge.redis"


def init_app(app: Flask, url: str) -> None:
    # Short timeouts: a webhook must answer 503 quickly when Redis is gone, not hang.
    app.extensions[EXTENSION_KEY] = Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )


def redis(app: Flask | None = None) -> Redis:
    return (app or current_app).extensions[EXTENSION_KEY]


def queue(name: str, app: Flask | None = None) -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=redis(app))


class LuaScript:
    """A Lua script run with EVALSHA; loaded on first use, and again after Redis restarted empty."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)

    def __call__(self, conn: Redis, keys: tuple[str, ...] = (), args: tuple = ()):
        try:
            return conn.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            conn.script_load(self.source)
            return conn.evalsha(self.sha, len(keys), *keys, *args)


_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class RedisLock:
    """A lock across processes and hosts that frees itself if its holder dies.

    ``SET NX PX`` with a random value; a heartbeat thread renews it while held; released by
    a compare-and-delete in Lua, so a holder whose lock expired never frees another's.
    """

    POLL_SECONDS = 0.05

    def __init__(self, conn: Redis, key: str, ttl_seconds: float):
        self.conn = conn
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.value = secrets.token_hex(16)
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait_seconds: float = 0.0) -> bool:
        deadline = time.monotonic() + wait_seconds
        while True:
            if self.conn.set(self.key, self.value, nx=True, px=self.ttl_ms):
                self._start_heartbeat()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.POLL_SECONDS)

    def renew(self) -> bool:
        renewed = bool(self.conn.eval(_RENEW, 1, self.key, self.value, self.ttl_ms))
        if not renewed:
            self.lost = True
        return renewed

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.ttl_ms / 3000):
                try:
                    if not self.renew():
                        log.warning("lost the lock %s", self.key)
                        return
                except Exception:  # Redis blip: try again next beat; the lock outlives two misses
                    log.warning("could not renew the lock %s", self.key, exc_info=True)

        self._thread = threading.Thread(target=beat, name=f"renew {self.key}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.conn.eval(_RELEASE, 1, self.key, self.value)
        except Exception:
            log.warning("could not release the lock %s; it expires by itself", self.key)

"""Redis and RQ wiring shared by the web app, the webhook and the jobs.

Queues have names so that a slow full sync never delays a booking's write to Google:

- ``push``: write a reservation to Google (someone is waiting for "confirmed").
- ``sync``: mirror a room from Google.
- ``channels``: create, renew and stop watch channels; periodic safety nets.
- ``default``: anything else (e-mail).
"""

from __future__ import annotations

from flask import Flask, current_app
from redis import Redis
from rq import Queue

QUEUE_NAMES = ("push", "sync", "channels", "default")
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

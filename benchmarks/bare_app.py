"""The baselines for webhook ingest: bare Flask apps, under the same gunicorn as ours.

- ``POST /webhooks/google/calendar``: answers 204 and does nothing else (the target's baseline).
- ``POST /webhooks/google/calendar/one-redis-call``: answers 204 after one Redis round trip
  (INCR), the least any receiver pays that records a push before answering, as Google needs
  for a push not to be lost. It shows how much of the gap to the bare 204 is that round trip.
"""

import os

from flask import Flask
from redis import Redis

app = Flask(__name__)
_redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), socket_timeout=5)


@app.get("/healthz")
def healthz():
    return "", 204


@app.post("/webhooks/google/calendar")
def push():
    return "", 204


@app.post("/webhooks/google/calendar/one-redis-call")
def push_with_one_redis_call():
    _redis.incr("roombridge-bench:bare-pushes")
    return "", 204

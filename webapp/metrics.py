"""GET /metrics: Prometheus' text format, only for `Authorization: Bearer <METRICS_TOKEN>`.

With METRICS_TOKEN unset the route answers 404, as if it did not exist. The figures are
roombridge/metrics.py's: the processes' counters (added up over PROMETHEUS_MULTIPROC_DIR in
multiprocess mode) and the gauges read from Redis and the database at each scrape.
"""

from __future__ import annotations

import hmac
import os

from flask import Blueprint, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from roombridge import db, metrics
from roombridge.db import utcnow
from roombridge.gcal import call_budget
from roombridge.queue import redis

bp = Blueprint("metrics", __name__)


class _Gauges:
    """A collector that reads the gauges when the registry is collected."""

    def collect(self):
        app = current_app._get_current_object()
        return metrics.read_gauges(db.session(), redis(app), call_budget(app), utcnow())


class _ThisProcess:
    """The default registry's metrics (this process's counters), when not in multiprocess mode."""

    def collect(self):
        return REGISTRY.collect()


@bp.get("/metrics")
def scrape() -> Response:
    token = current_app.config["ROOMBRIDGE"].METRICS_TOKEN
    if not token:
        abort(404)
    offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(offered.encode(), token.encode()):
        return Response("metrics token required\n", status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    registry = CollectorRegistry()
    # prometheus_client's own variable: set, every process of the host writes its counts there.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(_Gauges())
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

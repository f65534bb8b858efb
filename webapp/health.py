"""Liveness and readiness probes."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify

from roombridge import db
from roombridge.queue import redis

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive; says nothing of its dependencies."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready to serve: the database and Redis both answer. 503 names what does not."""
    failures = {}
    try:
        db.session().execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure means not ready; say which
        failures["database"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    try:
        redis().ping()
    except Exception as exc:
        failures["redis"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    if failures:
        return jsonify(status="unavailable", failures=failures), 503
    return jsonify(status="ok", checks={"database": "ok", "redis": "ok"})

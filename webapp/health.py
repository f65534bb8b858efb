"""Liveness and readiness probes."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, jsonify

from roombridge import db
from roombridge.queue import redis

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz():
    """The process is alive; says nothing of its dependencies."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready to serve: the database and Redis both answer. 503 names what does not.

    The probe is anonymous, so the reason (host names, user names, driver messages) goes to the
    log, never into the answer.
    """
    failures = {}
    try:
        db.session().execute(sa.text("SELECT 1"))
    except Exception:  # any failure means not ready; say which
        log.exception("readyz: the database does not answer")
        failures["database"] = "unavailable"
    try:
        redis().ping()
    except Exception:
        log.exception("readyz: Redis does not answer")
        failures["redis"] = "unavailable"
    if failures:
        return jsonify(status="unavailable", failures=failures), 503
    return jsonify(status="ok", checks={"database": "ok", "redis": "ok"})

"""The Google call log's two periodic jobs: thin; what they do and why lives in roombridge/call_log.py."""

from __future__ import annotations

import logging

from flask import current_app

from jobs import job
from roombridge import call_log, db
from roombridge.db import utcnow
from roombridge.queue import redis

log = logging.getLogger(__name__)


@job("default", timeout=600)
def flush_google_calls() -> int:
    """Write the buffered records of Google calls to the table, in batches."""
    written = call_log.flush(db.session(), redis())
    if written:
        log.info("Google call log: %d call(s) written", written)
    return written


@job("default", timeout=600)
def purge_google_calls() -> int:
    """Delete the call log's rows older than GOOGLE_CALL_LOG_RETENTION_DAYS, in batches."""
    days = current_app.config["ROOMBRIDGE"].GOOGLE_CALL_LOG_RETENTION_DAYS
    deleted = call_log.purge(db.session(), utcnow(), days)
    if deleted:
        log.info("Google call log: %d call(s) older than %d days deleted", deleted, days)
    return deleted

"""The Insights rollup job: thin; what it sums and why lives in roombridge/insights.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from jobs import job
from roombridge import db, insights

log = logging.getLogger(__name__)


@job("default", timeout=1800)
def refresh_insights_rollup() -> list[str]:
    """Sum the latest whole months again, and any month of the last year not summed yet."""
    months = insights.refresh_rollup(db.session(), datetime.now(UTC).date())
    log.info("insights rollup: summed %s", ", ".join(f"{m:%Y-%m}" for m in months) or "nothing")
    return [m.isoformat() for m in months]

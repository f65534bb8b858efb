"""The Insights rollup job: thin; what it sums and why lives in roombridge/insights.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from jobs import job
from roombridge import db, insights

log = logging.getLogger(__name__)


@job("default", timeout=1800)
def refresh_insights_rollup() -> dict[str, int]:
    """Sum the days not summed yet, the latest and the changed ones, then their whole months."""
    days, months = insights.refresh_rollup(db.session(), datetime.now(UTC).date())
    log.info("insights rollup: summed %d days and %s", len(days), ", ".join(f"{m:%Y-%m}" for m in months) or
             "no month")
    return {"days": len(days), "months": len(months)}

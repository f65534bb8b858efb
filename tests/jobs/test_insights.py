"""The scheduler runs the Insights rollup as a periodic job, through a real worker."""

from __future__ import annotations

import sqlalchemy as sa

from jobs import schedule
from roombridge import db
from roombridge.models import UsageRollup
from tests.support import run_jobs


def test_the_rollup_job_sums_whole_months_of_the_last_year(app, monkeypatch):
    [periodic] = [p for p in schedule.PERIODIC if p.id == "insights-rollup"]
    monkeypatch.setattr(schedule, "PERIODIC", [periodic])
    assert schedule.enqueue_due(app, 1_000_000.0) == ["periodic-insights-rollup-277"]
    assert run_jobs(app, ("default",)) == 1
    with app.app_context():
        months = db.session().scalars(sa.select(UsageRollup.month)).all()
    assert len(months) == 13 and all(m.day == 1 for m in months)  # nothing booked: empty months, summed

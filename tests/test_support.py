"""The test helpers themselves: what they leave behind."""

from __future__ import annotations


def test_running_jobs_in_the_test_process_leaves_its_signal_handlers_as_they_were(app):
    import signal

    from tests.support import run_jobs

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    run_jobs(app)
    assert {sig: signal.getsignal(sig) for sig in before} == before

"""The sync jobs with a real RQ worker: in this process, and as a process that gets killed."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from jobs.sync import safety_net_sync, sweep_room, sync_room
from roombridge import db
from roombridge.db import utcnow
from roombridge.gcal import call_budget
from roombridge.models import Room, RoomSyncState
from roombridge.notifications import request_sync
from roombridge.queue import queue
from tests.factories import make_room
from tests.support import SERVICE_ACCOUNT, kill_worker, run_jobs, start_worker, wait_until
from tests.sync_support import ROOM, add_room, reservations, rfc, soon, sync_runs


@pytest.fixture
def room_id(emulator, google_app):
    return add_room(emulator, google_app)


def test_requested_sync_runs_in_a_worker_and_mirrors_the_room(emulator, google_app, room_id):
    start = soon()
    emulator.state.book("bob@example.com", ROOM, "Standup", rfc(start), rfc(start + timedelta(minutes=15)))
    with google_app.app_context():
        assert request_sync(room_id) is True
    run_jobs(google_app, queues=("sync",))
    assert [r.title for r in reservations(google_app, room_id)] == ["Standup"]
    with google_app.app_context():
        state = db.session().get(RoomSyncState, room_id)
        assert state.sync_token and state.sync_count == 1 and state.last_error is None


def _release_scheduled(app, name: str) -> None:
    """Move the jobs enqueued for later on queue `name` to the queue now (what RQ's scheduler does in time)."""
    with app.app_context():
        ready = queue(name)
        registry = ScheduledJobRegistry(queue=ready)
        for job_id in registry.get_job_ids():
            job = Job.fetch(job_id, connection=ready.connection)
            registry.remove(job)
            ready.enqueue_job(job)


def test_safety_net_sweeps_each_in_scope_room_once_spread_over_the_tick_as_sweeps(emulator, google_app, room_id):
    other = add_room(emulator, google_app, "borealis@resource.calendar.google.com", "Borealis")
    with google_app.app_context():
        make_room(db.session(), in_scope=False)
        db.session().commit()
        assert safety_net_sync() == 2  # never synced: both due now
        assert safety_net_sync() == 0  # planned within the tick: not twice
        # The first now, the next later in the tick: spread, not a burst.
        assert [j.args[0] for j in queue("sweep").jobs] == [room_id]
        assert ScheduledJobRegistry(queue=queue("sweep")).get_job_ids() != []
    _release_scheduled(google_app, "sweep")
    run_jobs(google_app, queues=("sweep",))
    assert sync_runs(emulator) == 1 and sync_runs(emulator, "borealis@resource.calendar.google.com") == 1
    minutes = call_budget(google_app).usage(minutes=2).minutes
    assert sum(m.granted["sweep"] for m in minutes) == 2 and sum(m.granted["sync"] for m in minutes) == 0
    with google_app.app_context():
        assert {s.room_id for s in db.session().query(RoomSyncState)} == {room_id, other}


def test_a_sweep_skips_a_room_a_push_synced_after_the_plan(emulator, google_app, room_id):
    with google_app.app_context():
        planned = utcnow()
        sync_room(room_id)  # a push's sync, after the plan
        calls = sync_runs(emulator)
        assert sweep_room(room_id, planned.isoformat()) is None
    assert sync_runs(emulator) == calls


def test_syncs_of_a_room_start_at_least_the_minimum_interval_apart(emulator, make_app, service_account_file):
    app = make_app(GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file, GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
                   SYNC_MIN_INTERVAL_SECONDS=0.4)
    room_id = add_room(emulator, app)
    with app.app_context():
        first = time.monotonic()
        sync_room(room_id)
        sync_room(room_id)
        assert time.monotonic() - first >= 0.4


def test_a_room_google_refuses_records_the_reason_and_does_not_fail_the_job(emulator, google_app, room_id):
    emulator.state.unshare(ROOM, SERVICE_ACCOUNT)
    with google_app.app_context():
        assert sync_room(room_id) is None
        state = db.session().get(RoomSyncState, room_id)
        assert "notFound" in state.last_error and state.sync_token is None


def test_out_of_scope_room_is_not_synced(emulator, google_app, room_id):
    with google_app.app_context():
        db.session().get(Room, room_id).in_scope = False
        db.session().commit()
        assert sync_room(room_id) is None
    assert sync_runs(emulator) == 0


@pytest.mark.slow
def test_worker_killed_mid_sync_leaves_the_old_state_and_the_next_sync_gets_it_right(
        emulator, google_app, room_id):
    start = soon()
    emulator.state.book("bob@example.com", ROOM, "Before", rfc(start), rfc(start + timedelta(minutes=30)))
    with google_app.app_context():
        request_sync(room_id)
    run_jobs(google_app, queues=("sync",))
    with google_app.app_context():
        token_before = db.session().get(RoomSyncState, room_id).sync_token
    titles = [f"Meeting {n}" for n in range(8)]
    for n, title in enumerate(titles):
        emulator.state.book("bob@example.com", ROOM, title, rfc(start + timedelta(hours=n + 1)),
                            rfc(start + timedelta(hours=n + 1, minutes=30)))
    emulator.state.delete_person_event("bob@example.com", reservations(google_app, room_id)[0].google_event_id)
    # One event per page, each page slow: the sync is surely in the middle when the worker dies.
    emulator.state.update_settings(page_size_cap=1, latency=0.15)
    calls_before = len(emulator.state.requests(calendar=ROOM))
    with google_app.app_context():
        assert request_sync(room_id) is True
    worker = start_worker(google_app, "sync", burst=True, SYNC_MIN_INTERVAL_SECONDS="0")
    try:
        wait_until(lambda: len(emulator.state.requests(calendar=ROOM)) >= calls_before + 3, timeout=30,
                 what="the worker to be paging")
    finally:
        kill_worker(worker)  # the whole process group, as a dying machine would

    # Killed before its one commit: nothing applied, the old token kept.
    assert [r.title for r in reservations(google_app, room_id, live_only=True)] == ["Before"]
    with google_app.app_context():
        assert db.session().get(RoomSyncState, room_id).sync_token == token_before

    # The next request (a push, or the safety net) syncs again once the dead worker's lock expires.
    emulator.state.update_settings(page_size_cap=None, latency=0.0)
    with google_app.app_context():
        assert request_sync(room_id) is True
    run_jobs(google_app, queues=("sync",))
    assert [r.title for r in reservations(google_app, room_id, live_only=True)] == titles
    assert len(reservations(google_app, room_id)) == 9  # "Before" cancelled, not duplicated

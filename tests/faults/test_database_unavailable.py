"""The database goes away while Google pushes: no push is lost.

A change push needs only Redis (the channel's entry there, roombridge/channels.py): during
an outage it is still taken in, and the sync it requested fails, is retried by RQ, and
mirrors the change once the database is back. A push that does need the database (the
channel's entry is missing, as after Redis restarted empty) is answered 503, so Google
retries it, and the retry does the work.

Made real on PostgreSQL: the test's own database stops accepting connections
(ALLOW_CONNECTIONS false) and every open connection is terminated, as when the server
restarts or fails over; then connections are allowed again. (SQLite is a file in the same
process: it cannot be "unreachable", only locked, which the busy timeout waits out.)
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry

from roombridge import db, migrate, notifications
from roombridge.queue import queue, redis
from tests.support import TEST_SETTINGS, run_jobs, wait_until
from tests.sync_support import ROOM, pushes_counted, reservations, rfc, soon, watched_room
from webapp import create_app


@pytest.fixture
def outage_app(own_postgres, redis_url, emulator, service_account_file, live_server_factory):
    """An app on a database the test can take away, a room with a live channel, its handshake done."""
    app = create_app(**TEST_SETTINGS, DATABASE_URL=own_postgres.url, REDIS_URL=redis_url,
                     GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file,
                     GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url)
    migrate.upgrade(app)
    room_id, channel = watched_room(emulator, app, live_server_factory)
    wait_until(lambda: [p for p in emulator.state.pushes(channel.id) if p["outcome"] == "delivered"],
               what="the sync handshake")
    emulator.state.update_settings(push_retry_base=0.3, push_retry_cap=1.0, push_max_attempts=30)
    yield app, room_id, channel.id
    db.engine(app).dispose()


def _book_two(emulator) -> list[str]:
    start = soon()
    titles = ["First in the outage", "Second in the outage"]
    for n, title in enumerate(titles):
        emulator.state.book("bob@example.com", ROOM, title, rfc(start + timedelta(hours=n)),
                            rfc(start + timedelta(hours=n, minutes=45)))
    return titles


def _exists_pushes(emulator, channel_id: str) -> list[dict]:
    return [p for p in emulator.state.pushes(channel_id) if p["state"] == "exists"]


def test_pushes_in_a_database_outage_are_taken_and_their_sync_retried_until_it_is_back(
        outage_app, own_postgres, emulator):
    app, room_id, channel_id = outage_app

    own_postgres.make_unavailable()
    titles = _book_two(emulator)
    delivered = wait_until(lambda: len([p for p in _exists_pushes(emulator, channel_id)
                                        if p["outcome"] == "delivered"]) == 2 and _exists_pushes(emulator, channel_id),
                           what="both pushes taken in")
    assert [p["status"] for p in delivered] == [200, 200]  # no 503: the database was not needed
    with app.app_context():
        assert queue("sync").count == 1  # two pushes, one sync requested

    # The worker tries during the outage: the sync fails and RQ keeps a retry for it.
    run_jobs(app, queues=("sync",))
    with app.app_context():
        assert ScheduledJobRegistry("sync", connection=redis()).count == 1

    own_postgres.bring_back()
    with app.app_context():
        # The retry's moment comes (2 s, jobs/sync.py), RQ's scheduler puts it back on the queue.
        deadline = time.monotonic() + 15
        while not reservations(app, room_id) and time.monotonic() < deadline:
            time.sleep(0.5)
            SimpleWorker([queue("sync")], connection=redis()).work(burst=True, with_scheduler=True)
    assert [r.title for r in reservations(app, room_id)] == titles
    assert pushes_counted(app, channel_id) == 2


def test_a_push_that_needs_the_database_in_an_outage_gets_503_and_googles_retry_gets_through(
        outage_app, own_postgres, emulator):
    app, room_id, channel_id = outage_app
    with app.app_context():
        redis().delete(notifications.channel_key(channel_id))  # as if Redis had restarted empty

    own_postgres.make_unavailable()
    titles = _book_two(emulator)
    refused = wait_until(lambda: [p for p in _exists_pushes(emulator, channel_id) if p["status"] == 503],
                         what="503 answers")
    assert all(p["outcome"] == "retrying" for p in refused)  # Google will try again
    with app.app_context():
        assert queue("sync").count == 0  # nothing was half-done while the database was away

    own_postgres.bring_back()
    wait_until(lambda: len([p for p in _exists_pushes(emulator, channel_id) if p["outcome"] == "delivered"]) >= 1,
               what="Google's retry to get through")
    run_jobs(app, queues=("sync",))
    assert [r.title for r in reservations(app, room_id)] == titles
    with app.app_context():
        assert redis().exists(notifications.channel_key(channel_id))  # the entry was written back from the row
    assert pushes_counted(app, channel_id) >= 1

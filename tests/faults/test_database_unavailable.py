"""The database goes away while Google pushes: the webhook answers 503, Google retries, nothing is lost.

Made real on PostgreSQL: the test's own database stops accepting connections
(ALLOW_CONNECTIONS false) and every open connection is terminated, as when the server
restarts or fails over; then connections are allowed again. (SQLite is a file in the same
process: it cannot be "unreachable", only locked, which the busy timeout waits out.)
"""

from __future__ import annotations

from datetime import timedelta

from roombridge import db, migrate
from roombridge.models import WatchChannel
from tests.conftest import TEST_SETTINGS, run_jobs, wait_until
from tests.sync_support import ROOM, reservations, rfc, soon, watched_room
from webapp import create_app


def test_pushes_during_a_database_outage_get_503_and_every_change_is_mirrored_after(
        own_postgres, redis_url, emulator, service_account_file, live_server_factory):
    app = create_app(**TEST_SETTINGS, DATABASE_URL=own_postgres.url, REDIS_URL=redis_url,
                     GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file,
                     GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url)
    try:
        migrate.upgrade(app)
        room_id, channel = watched_room(emulator, app, live_server_factory)
        wait_until(lambda: [p for p in emulator.state.pushes(channel.id) if p["outcome"] == "delivered"],
                 what="the sync handshake")
        emulator.state.update_settings(push_retry_base=0.3, push_retry_cap=1.0, push_max_attempts=30)

        own_postgres.make_unavailable()
        start = soon()
        titles = ["First in the outage", "Second in the outage"]
        for n, title in enumerate(titles):
            emulator.state.book("bob@example.com", ROOM, title, rfc(start + timedelta(hours=n)),
                                rfc(start + timedelta(hours=n, minutes=45)))
        refused = wait_until(lambda: [p for p in emulator.state.pushes(channel.id)
                                    if p["state"] == "exists" and p["status"] == 503], what="503 answers")
        assert all(p["outcome"] == "retrying" for p in refused)  # Google will try again
        with app.app_context():
            from roombridge.queue import queue

            assert queue("sync").count == 0  # nothing was half-done while the database was away

        own_postgres.bring_back()
        wait_until(lambda: len([p for p in emulator.state.pushes(channel.id)
                              if p["state"] == "exists" and p["outcome"] == "delivered"]) >= 1,
                 what="Google's retry to get through")
        run_jobs(app, queues=("sync",))
        assert [r.title for r in reservations(app, room_id)] == titles
        with app.app_context():
            assert db.session().get(WatchChannel, channel.id).push_count >= 1
    finally:
        db.engine(app).dispose()

"""The console's read model and failed-job helpers, without HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobs.channels import renew_room_channel
from roombridge import console, db, notifications
from roombridge.db import utcnow
from roombridge.models import ReservationSource, ReservationStatus, RoomSyncState, WatchChannel
from roombridge.notifications import take_push
from roombridge.queue import queue, redis
from tests.factories import make_reservation, make_room
from tests.support import run_jobs


def _channel(room, name, now, **fields):
    return WatchChannel(id=name, room_id=room.id, token="t", address="a", created_at=now, **fields)


def test_room_overviews_pick_the_live_channel_that_expires_last_and_count_what_is_to_come(session):
    now = utcnow()
    room, quiet = make_room(session, name="Atlas"), make_room(session, name="Quiet")
    session.add_all([
        _channel(room, "late", now, expiration=now + timedelta(days=6)),
        _channel(room, "early", now, expiration=now + timedelta(days=1), last_push_at=now - timedelta(minutes=5)),
        _channel(room, "lapsed", now, expiration=now - timedelta(minutes=1)),
        _channel(room, "stopped", now, expiration=now + timedelta(days=9), stopped_at=now,
                 last_push_at=now - timedelta(minutes=1)),
        RoomSyncState(room_id=room.id, last_sync_at=now, sync_count=3, last_error="Google said no"),
    ])
    live = make_reservation(session, room, start=now + timedelta(hours=2), source=ReservationSource.WEB)
    make_reservation(session, room, start=now + timedelta(hours=2), source=ReservationSource.GOOGLE,
                     status=ReservationStatus.CONFLICT, conflict_with_id=live.id)
    make_reservation(session, room, start=now - timedelta(days=2), source=ReservationSource.GOOGLE,
                     status=ReservationStatus.CONFLICT)  # over: not counted
    session.commit()

    atlas, empty = console.room_overviews(session, [room, quiet], now)
    assert atlas.channel.id == "late" and atlas.open_channels == 3
    assert atlas.last_push_at == now - timedelta(minutes=1)  # stopped channels count for "last push"
    assert atlas.sync.sync_count == 3 and atlas.conflicts == 1
    assert atlas.problems == ["Last sync failed: Google said no"]
    assert [c.title for c in console.room_conflicts(session, room, now)] == ["Planning"]
    assert (empty.channel, empty.last_push_at, empty.sync, empty.conflicts) == (None, None, None, 0)
    assert empty.problems == [
        "No live push channel: changes made in Google arrive only with the safety-net sync."]
    assert console.room_overviews(session, [], now) == []


def test_field_errors_name_each_bad_field():
    errors = console.field_errors({"name": "", "capacity": "x", "floor": "2", "time_zone": "Nowhere/Land"})
    assert set(errors) == {"name", "capacity", "time_zone"}
    assert errors["capacity"] == "Capacity must be a whole number."


def test_failed_jobs_carry_their_reason_and_can_be_retried_once(app):
    with app.app_context():
        room = make_room(db.session())
        db.session().commit()
        job = renew_room_channel.enqueue(room.id, retry=None)  # no service account here: it fails
    run_jobs(app, queues=("channels",))
    with app.app_context():
        [failed] = console.failed_jobs(redis())
        assert (failed.id, failed.queue, failed.function) == (job.id, "channels", "jobs.channels.renew_room_channel")
        assert failed.reason.endswith("GOOGLE_SERVICE_ACCOUNT_FILE is not set") and "Traceback" in failed.traceback
        assert failed.failed_at is not None and console.failed_job_count(redis()) == 1
        assert console.retry_failed_job(redis(), "channels", job.id) is True
        assert queue("channels").job_ids == [job.id] and console.failed_jobs(redis()) == []
        assert console.retry_failed_job(redis(), "channels", job.id) is False
        assert console.retry_failed_job(redis(), "nonsense", job.id) is False


@pytest.mark.parametrize("traceback, reason", [
    ("Traceback (most recent call last):\n  File x\nValueError: bad\n\n", "ValueError: bad"),
    ("", "no reason recorded"),
])
def test_the_reason_is_the_last_line_of_the_traceback(traceback, reason):
    assert console._reason(traceback) == reason


def test_last_push_counts_pushes_not_yet_added_by_a_sync(app, session):
    """With the workers down, the pushes counted in Redis still show in the console."""
    now = utcnow()
    room = make_room(session, name="Atlas")
    channel = _channel(room, "live", now, expiration=now + timedelta(days=6), resource_id="r",
                       last_push_at=now - timedelta(hours=3))
    session.add(channel)
    session.commit()
    notifications.cache_channel(redis(), channel)
    pushed_at = now - timedelta(seconds=5)
    assert take_push(redis(), "live", "t", "r", 42, pushed_at).verdict == "accepted"

    [overview] = console.room_overviews(session, [room], now, redis())
    assert overview.last_push_at == pytest.approx(pushed_at, abs=timedelta(milliseconds=1))
    [from_rows_only] = console.room_overviews(session, [room], now)
    assert from_rows_only.last_push_at == now - timedelta(hours=3)

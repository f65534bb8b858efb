"""Channel jobs run by a real RQ worker against the emulator, and an hour of renewals in simulated time."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import jobs.channels
from jobs import schedule
from jobs.channels import renew_room_channel
from roombridge import channels, db, notifications, rooms
from roombridge.db import utcnow
from roombridge.gcal import CalendarGateway
from roombridge.models import Room, WatchChannel
from roombridge.queue import redis
from tests.factories import make_room
from tests.support import SERVICE_ACCOUNT, run_jobs, shared_room, wait_until

ATLAS = "atlas@resource.calendar.google.com"
STOP_PATH = "/calendar/v3/channels/stop"


@pytest.fixture
def watched_app(make_google_app, emulator):
    shared_room(emulator, ATLAS, "Atlas")

    def build(**settings):
        app = make_google_app(GOOGLE_MAX_ATTEMPTS=1, **settings)
        with app.app_context():
            make_room(db.session(), calendar_id=ATLAS, name="Atlas")
            db.session().commit()
        return app

    return build


def channel_rows(app) -> list[WatchChannel]:
    with app.app_context():
        return list(db.session().scalars(sa.select(WatchChannel).order_by(WatchChannel.created_at)))


def test_the_scheduler_runs_the_renewal_pass_on_the_channels_queue(watched_app, emulator):
    app = watched_app(WEBHOOK_BASE_URL="http://127.0.0.1:9")
    enqueued = schedule.enqueue_due(app, time.time())
    assert any(job_id.startswith("periodic-renew-channels-") for job_id in enqueued)
    run_jobs(app, queues=("channels",))
    [channel] = channel_rows(app)
    assert [c["id"] for c in emulator.state.channels_info()] == [channel.id]


def describe(emulator) -> str:
    pushes = [(p["channel_id"][:4], p["state"], p["status"], p["outcome"], p["time"]) for p in emulator.state.pushes()]
    known = [(c["id"][:4], c["stopped"], c["expiration"]) for c in emulator.state.channels_info()]
    dispatcher = emulator.state.dispatcher
    alive = dispatcher._thread is not None and dispatcher._thread.is_alive()
    heads = [(round(due - time.monotonic(), 2), d.resource_state, d.attempts) for due, _, d in list(dispatcher._queue)]
    return f"pushes {pushes[-8:]}, channels {known[-3:]}, dispatcher alive {alive} queue {heads}"




@pytest.mark.slow
def test_channels_never_lapse_over_an_hour_of_short_lived_channels(watched_app, emulator, live_server_factory,
                                                                   monkeypatch):
    ttl, step, hour = 300, 60, 3600
    emulator.state.update_settings(max_channel_ttl=ttl)
    app = watched_app(SCHEDULER_TICK_SECONDS=30)
    server = live_server_factory(app)
    app.config["ROOMBRIDGE"] = dataclasses.replace(app.config["ROOMBRIDGE"], WEBHOOK_BASE_URL=server.url)
    # The job reads the emulator's clock, which the test moves an hour forward in a minute steps.
    monkeypatch.setattr(jobs.channels, "utcnow", emulator.state.clock.now)
    start = emulator.state.clock.now()

    for i in range(hour // step + 1):
        if i:
            emulator.state.advance_clock(step)
        now = emulator.state.clock.now()
        enqueued = schedule.enqueue_due(app, now.timestamp())
        assert any(j.startswith("periodic-renew-channels-") for j in enqueued), (i, now, enqueued)
        run_jobs(app, queues=("channels",))

        live = [c for c in emulator.state.channels_info()
                if not c["stopped"] and int(c["expiration"]) / 1000 > now.timestamp()]
        assert 1 <= len(live) <= 2, f"step {i}: {len(live)} live channels at Google"

        # A change made in Google now is pushed on a live channel and reaches our webhook.
        seen = {(p["channel_id"], p["message_number"]) for p in emulator.state.pushes()}
        slot = datetime(2030, 1, 7, 8, 0, tzinfo=UTC) + timedelta(hours=i)
        emulator.state.book("alice@example.com", ATLAS, f"Stand-up {i}", slot.isoformat(),
                            (slot + timedelta(minutes=30)).isoformat())
        live_ids = {c["id"] for c in live}
        wait_until(lambda live_ids=live_ids, seen=seen: [
                     p for p in emulator.state.pushes() if p["state"] == "exists" and p["status"] == 200
                     and p["channel_id"] in live_ids and (p["channel_id"], p["message_number"]) not in seen],
                 what=f"step {i}: a push on {live_ids} ({describe(emulator)}, now {now})")
        with app.app_context():  # counted in Redis, added to the row by the room's next sync
            recorded = [p.last_push_at for p in notifications.pending_pushes(redis(), list(live_ids)).values()]
            assert any(recorded)

    rows = channel_rows(app)
    end = emulator.state.clock.now()
    # Renewed again and again: with five-minute channels, a dozen or more in the hour.
    assert len(rows) >= hour // ttl
    # Coverage with no gap: each channel is opened before the one it replaces stops or expires.
    assert rows[0].created_at - start < timedelta(seconds=5)  # watched from the first tick
    covered_until = rows[0].created_at
    for row in rows:
        assert row.created_at <= covered_until, f"gap before {row.id}: {covered_until} .. {row.created_at}" + str(
            [(r.id[:4], r.created_at.strftime("%H:%M:%S.%f"), r.expiration.strftime("%H:%M:%S.%f"),
              r.stopped_at and r.stopped_at.strftime("%H:%M:%S.%f")) for r in rows])
        covered_until = max(covered_until, min(row.expiration, row.stopped_at or row.expiration))
    assert covered_until > end
    # Every replaced channel was stopped at Google; only the current one is still open.
    google = {c["id"]: c for c in emulator.state.channels_info()}
    open_rows = [r for r in rows if r.stopped_at is None]
    assert len(open_rows) == 1 and not google[open_rows[0].id]["stopped"]
    stopped_ids = {r.id for r in rows} - {open_rows[0].id}
    assert all(google[cid]["stopped"] for cid in stopped_ids)
    stops = [r for r in emulator.state.requests(method="POST") if r["path"] == STOP_PATH and r["status"] == 204]
    assert len(stops) == len(stopped_ids)
    # None of them was left to lapse: each was stopped before its expiry.
    assert all(r.stopped_at < r.expiration for r in rows if r.stopped_at)
    # The handshake of each channel reached the webhook, which knew the channel by then.
    assert all(r.sync_received_at is not None for r in rows)


# --- the admin console's renew button ----------------------------------------------------------



@pytest.fixture
def atlas(make_google_app, emulator):
    shared_room(emulator, ATLAS, "Atlas")
    app = make_google_app(GOOGLE_MAX_ATTEMPTS=1, WEBHOOK_BASE_URL="http://127.0.0.1:9")
    with app.app_context():
        added = rooms.add_room(db.session(), CalendarGateway.for_app(kind="write"), app.config["ROOMBRIDGE"], ATLAS,
                               name="Atlas", now=utcnow())
        yield added.room.id, added.channel.id


def test_renewal_replaces_the_channel_and_stops_the_old_one(atlas, emulator):
    room_id, first = atlas
    second = renew_room_channel(room_id, "admin@example.com")
    google = {c["id"]: c["stopped"] for c in emulator.state.channels_info()}
    assert google == {first: True, second: False}


def test_renewal_of_an_unshared_room_keeps_googles_reason_on_the_room(atlas, emulator):
    room_id, first = atlas
    emulator.state.unshare(ATLAS, SERVICE_ACCOUNT)
    assert renew_room_channel(room_id) is None
    db.session().expire_all()  # the job ran in its own app context and session
    room = db.session().get(Room, room_id)
    assert room.health_error.startswith("Google refused a push channel")
    assert [c["id"] for c in emulator.state.channels_info() if not c["stopped"]] == [first]


def test_renewal_of_a_room_out_of_scope_does_nothing(atlas, emulator):
    room_id, _ = atlas
    db.session().get(Room, room_id).in_scope = False
    db.session().commit()
    calls = len(emulator.state.requests())
    assert renew_room_channel(room_id) is None
    assert len(emulator.state.requests()) == calls


# --- each channel's own renewal, scheduled at its moment ------------------------------------------


def scheduled_renewals(app) -> dict[str, datetime]:
    """Channel renewal jobs waiting in RQ's scheduled registry: job id -> when they run."""
    from rq.registry import ScheduledJobRegistry

    with app.app_context():
        registry = ScheduledJobRegistry("channels", connection=redis())
        return {job_id: registry.get_scheduled_time(job_id) for job_id in registry.get_job_ids()}


def test_opening_a_channel_schedules_its_own_renewal_at_its_moment(atlas, emulator, app):
    _, first = atlas
    config = app.config["ROOMBRIDGE"]
    channel = db.session().get(WatchChannel, first)
    moment = channels.renewal_moment(channel, config)
    assert moment < channel.expiration - timedelta(seconds=3 * config.SCHEDULER_TICK_SECONDS)
    renewals = scheduled_renewals(app)
    assert list(renewals) == [jobs.channels.renewal_job_id(first)]
    assert abs(renewals[jobs.channels.renewal_job_id(first)] - moment) < timedelta(seconds=1)


def test_a_channels_own_renewal_replaces_it_once_at_its_moment(make_google_app, emulator):
    # Google caps the channel at a minute, whatever we ask: far less than a tick away from the
    # lapse if the tick were the only thing driving renewal.
    emulator.state.update_settings(max_channel_ttl=60)
    shared_room(emulator, ATLAS, "Atlas")
    app = make_google_app(GOOGLE_MAX_ATTEMPTS=1, WEBHOOK_BASE_URL="http://127.0.0.1:9")
    with app.app_context():
        added = rooms.add_room(db.session(), CalendarGateway.for_app(kind="write"), app.config["ROOMBRIDGE"], ATLAS,
                               name="Atlas", now=utcnow())
        first = db.session().get(WatchChannel, added.channel.id)
        moment = channels.renewal_moment(first, app.config["ROOMBRIDGE"])
        [at_google] = emulator.state.channels_info()
        assert int(at_google["expiration"]) - at_google["created"] == 60_000  # the watch answer said so

        # Run before its moment (another host's clock runs behind): nothing is replaced, it comes back later.
        jobs.channels.renew_channel(first.id, now=(moment - timedelta(seconds=5)).isoformat())
        assert [c["id"] for c in emulator.state.channels_info()] == [first.id]
        assert len(scheduled_renewals(app)) == 2

        jobs.channels.renew_channel(first.id, now=moment.isoformat())
        google = {c["id"]: c["stopped"] for c in emulator.state.channels_info()}
        [second] = set(google) - {first.id}
        assert google == {first.id: True, second: False}
        assert jobs.channels.renewal_job_id(second) in scheduled_renewals(app)

        # A second run for the replaced channel (a retry, or the periodic pass got there first) does nothing.
        jobs.channels.renew_channel(first.id, now=moment.isoformat())
        assert len(emulator.state.channels_info()) == 2

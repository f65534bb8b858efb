"""Channel lifecycle and renewal decisions: pure rules, then against the emulator over HTTP."""

from __future__ import annotations

import collections
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from roombridge import channels, db, notifications
from roombridge.config import CALENDAR_EVENTS_SCOPE, Config
from roombridge.db import utcnow
from roombridge.gcal import CalendarGateway
from roombridge.models import AuditEntry, Room, WatchChannel
from roombridge.notifications import take_push
from roombridge.queue import redis
from tests.factories import make_room
from tests.support import SERVICE_ACCOUNT
from tests.sync_support import take_pushes

ATLAS = "atlas@resource.calendar.google.com"
BOREALIS = "borealis@resource.calendar.google.com"
T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
WEEK = 7 * 24 * 3600


def a_channel(created_at=T0, ttl=WEEK, channel_id=None) -> WatchChannel:
    return WatchChannel(id=channel_id or str(uuid.uuid4()), room_id=1, token="t", address="x",
                        created_at=created_at, expiration=created_at + timedelta(seconds=ttl))


# --- pure renewal decisions ---------------------------------------------------------------


def test_renewal_moment_lies_in_the_window_before_expiry_with_a_margin():
    config = Config(CHANNEL_RENEW_WITHIN_SECONDS=86400, SCHEDULER_TICK_SECONDS=30)
    for _ in range(200):
        channel = a_channel()
        earliest, latest = channels.renewal_window(channel, config)
        assert earliest == channel.expiration - timedelta(days=1)
        assert latest == channel.expiration - timedelta(seconds=90)  # three ticks
        moment = channels.renewal_moment(channel, config)
        assert earliest <= moment <= latest
        assert channels.renewal_moment(channel, config) == moment  # deterministic
        assert not channels.is_due(channel, moment - timedelta(seconds=1), config)
        assert channels.is_due(channel, moment, config)


def test_thousands_of_channels_made_together_do_not_renew_in_the_same_minute():
    config = Config(CHANNEL_RENEW_WITHIN_SECONDS=86400, SCHEDULER_TICK_SECONDS=30)
    per_minute = collections.Counter(
        int(channels.renewal_moment(a_channel(), config).timestamp() // 60) for _ in range(5000)
    )
    # 5000 channels over a 1440-minute window: about 3.5 a minute, never a stampede.
    assert max(per_minute.values()) <= 15
    assert len(per_minute) > 1000


def test_a_short_lived_channel_renews_in_the_second_half_of_its_life():
    # Google (or the emulator) may cap the ttl far below the renewal window we configured.
    config = Config(CHANNEL_RENEW_WITHIN_SECONDS=86400, SCHEDULER_TICK_SECONDS=30)
    channel = a_channel(ttl=600)
    earliest, latest = channels.renewal_window(channel, config)
    assert earliest == T0 + timedelta(seconds=300)
    assert latest == channel.expiration - timedelta(seconds=90)
    assert not channels.is_due(channel, T0 + timedelta(seconds=299), config)
    assert channels.is_due(channel, channel.expiration - timedelta(seconds=90), config)


def test_a_channel_without_a_known_expiry_is_due():
    channel = a_channel()
    channel.expiration = None
    assert channels.is_due(channel, T0, Config())


# --- against the emulator -------------------------------------------------------------------


@pytest.fixture
def gapp(make_app, emulator, service_account_file):
    """Two shared room calendars; Atlas in scope. Channels capped by the emulator to ten minutes."""
    emulator.state.update_settings(max_channel_ttl=600)
    for calendar_id, name in ((ATLAS, "Atlas"), (BOREALIS, "Borealis")):
        emulator.state.add_calendar(calendar_id, name, kind="room")
        emulator.state.share(calendar_id, SERVICE_ACCOUNT, "writer")
    app = make_app(GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file,
                   GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
                   GOOGLE_MAX_ATTEMPTS=1, WEBHOOK_BASE_URL="http://127.0.0.1:9")
    with app.app_context():
        make_room(db.session(), calendar_id=ATLAS, name="Atlas")
        db.session().commit()
    return app


@pytest.fixture
def ctx(gapp):
    with gapp.app_context():
        yield db.session(), CalendarGateway.for_app(kind="renewal"), gapp.config["ROOMBRIDGE"]


def emulator_channel(emulator, channel_id):
    return next(c for c in emulator.state.channels_info() if c["id"] == channel_id)


def stop_calls(emulator):
    return [r for r in emulator.state.requests(method="POST") if r["path"] == "/calendar/v3/channels/stop"]


def atlas(session):
    return session.scalar(sa.select(Room).where(Room.calendar_id == ATLAS))


def test_create_channel_stores_googles_real_expiration_and_our_token(emulator, ctx):
    session, gw, config = ctx
    now = emulator.state.clock.now()
    channel = channels.create_channel(session, gw, atlas(session), config, now)
    google = emulator_channel(emulator, channel.id)
    # We asked for a week; Google's answer (capped at ten minutes here) is what we keep.
    assert channel.expiration == datetime.fromtimestamp(int(google["expiration"]) / 1000, UTC)
    assert timedelta(seconds=599) < channel.expiration - now < timedelta(seconds=605)
    assert google["token"] == channel.token and len(channel.token) >= 40
    assert google["address"] == "http://127.0.0.1:9/webhooks/google/calendar"
    assert google["resourceId"] == channel.resource_id
    stored = session.get(WatchChannel, channel.id)
    assert stored.room.calendar_id == ATLAS and stored.stopped_at is None


def test_replace_saves_the_new_channel_then_stops_the_old(emulator, ctx):
    session, gw, config = ctx
    now = emulator.state.clock.now()
    old = channels.create_channel(session, gw, atlas(session), config, now)
    new = channels.replace_channel(session, gw, old, config, now + timedelta(seconds=400))
    assert new.id != old.id and new.token != old.token
    assert emulator_channel(emulator, old.id)["stopped"] is True
    assert emulator_channel(emulator, new.id)["stopped"] is False
    assert [c["status"] for c in stop_calls(emulator)] == [204]
    assert old.stopped_at is not None and not old.stop_pending
    assert channels.current_channel(session, atlas(session), now + timedelta(seconds=401)).id == new.id


def test_a_failed_stop_never_blocks_the_new_channel_and_is_retried(emulator, ctx):
    session, gw, config = ctx
    now = emulator.state.clock.now()
    old = channels.create_channel(session, gw, atlas(session), config, now)
    emulator.state.add_fault(503, times=1, method="POST", path_regex="channels/stop")
    later = now + timedelta(seconds=500)
    new = channels.replace_channel(session, gw, old, config, later)
    assert old.stop_pending and "503" in old.stop_error and old.stopped_at is None
    assert emulator_channel(emulator, new.id)["stopped"] is False
    # The next renewal pass retries the stop and leaves the fresh channel alone.
    report = channels.renew_due(session, gw, config, later + timedelta(seconds=30))
    assert report.stopped == [old.id] and not report.created
    assert emulator_channel(emulator, old.id)["stopped"] is True
    assert old.stopped_at is not None and not old.stop_pending and old.stop_error is None


def test_google_refusing_a_channel_marks_the_room_unhealthy_and_keeps_the_old_channel(emulator, ctx):
    session, gw, config = ctx
    now = emulator.state.clock.now()
    old = channels.create_channel(session, gw, atlas(session), config, now)
    emulator.state.unshare(ATLAS, SERVICE_ACCOUNT)
    report = channels.renew_due(session, gw, config, old.expiration - timedelta(seconds=60))
    room = atlas(session)
    assert ATLAS in report.refused
    assert "Google refused a push channel" in room.health_error and "notFound" in room.health_error
    assert old.stopped_at is None  # still delivering until it expires; better than nothing
    assert session.scalar(sa.select(AuditEntry.action).where(AuditEntry.action == "channel.refused"))
    # Shared again: the next pass replaces the channel and the room is healthy again.
    emulator.state.share(ATLAS, SERVICE_ACCOUNT, "writer")
    report = channels.renew_due(session, gw, config, old.expiration - timedelta(seconds=50))
    assert len(report.created) == 1 and report.stopped == [old.id]
    assert atlas(session).health_error is None


def test_renewal_pass_opens_missing_channels_and_stops_those_of_rooms_out_of_scope(emulator, ctx):
    session, gw, config = ctx
    now = emulator.state.clock.now()
    borealis = make_room(session, calendar_id=BOREALIS, name="Borealis")
    session.commit()
    first = channels.renew_due(session, gw, config, now)
    assert len(first.created) == 2
    assert channels.renew_due(session, gw, config, now + timedelta(seconds=10)).as_dict() == {}
    borealis_channel = channels.current_channel(session, borealis, now)
    borealis.in_scope = False  # dropped from scope behind the pass's back
    session.commit()
    report = channels.renew_due(session, gw, config, now + timedelta(seconds=20))
    assert report.stopped == [borealis_channel.id]
    assert emulator_channel(emulator, borealis_channel.id)["stopped"] is True


def test_pushes_in_the_last_hour_are_counted_per_minute(gapp):
    with gapp.app_context():
        take_pushes(a_channel(), [T0 - timedelta(minutes=m) for m in (0, 0, 1, 59, 60, 61, 120)])
    assert notifications.pushes_in_last_hour(redis(gapp), T0) == 4


def test_integration_health_summary(emulator, ctx, gapp):
    session, gw, config = ctx
    now = emulator.state.clock.now()
    channel = channels.create_channel(session, gw, atlas(session), config, now)
    make_room(session, calendar_id=BOREALIS, name="Borealis", health_error="Access check: not shared")
    session.commit()
    take_pushes(channel, [now])
    health = channels.integration_health(session, redis(gapp), config, now)
    assert health.rooms_in_scope == 2 and health.rooms_unhealthy == 1 and health.rooms_without_channel == 1
    assert health.channels_expiring_soon == 1  # ten minutes left, renewal window a day
    assert health.pushes_last_hour == 1
    assert health.mode == "room" and health.scope == CALENDAR_EVENTS_SCOPE and not health.ok


def test_an_idle_renewal_pass_costs_the_same_queries_for_many_rooms(emulator, gapp, ctx):
    """The pass runs every scheduler tick: with nothing due it must not query per room."""
    from tests.support import counting_statements

    session, gw, config = ctx

    def add_rooms(count):
        for n in range(count):
            calendar_id = f"idle-{len(emulator.state.list_calendars())}-{n}@resource.calendar.google.com"
            emulator.state.add_calendar(calendar_id, "Idle", kind="room")
            emulator.state.share(calendar_id, SERVICE_ACCOUNT, "writer")
            make_room(session, calendar_id=calendar_id)
        session.commit()
        channels.renew_due(session, gw, config, emulator.state.clock.now())  # every room gets its channel

    def idle_pass():
        with counting_statements(gapp) as statements:
            report = channels.renew_due(session, gw, config, emulator.state.clock.now())
        assert report.as_dict() == {}
        return len(statements)

    add_rooms(2)
    few = idle_pass()
    add_rooms(10)
    assert idle_pass() == few


# --- the webhook's entry in Redis, and the push counts ------------------------------------


def test_the_webhooks_entry_follows_the_channel_through_its_life(emulator, ctx, gapp):
    session, gw, config = ctx
    now = emulator.state.clock.now()
    conn = redis(gapp)
    channel = channels.create_channel(session, gw, atlas(session), config, now)
    key = notifications.channel_key(channel.id)
    entry = conn.hgetall(key)
    assert entry[b"token"] == notifications.token_digest(channel.token).encode()
    assert channel.token.encode() not in entry.values()  # only its digest is kept
    assert (entry[b"resource_id"], int(entry[b"room_id"]), entry[b"stopped"]) == (
        channel.resource_id.encode(), channel.room_id, b"0")
    assert float(entry[b"expires"]) == pytest.approx(channel.expiration.timestamp(), abs=0.001)
    # It outlives the channel by a day, so a late push is still answered "stopped", then it goes.
    assert conn.expiretime(key) == int((channel.expiration + notifications.CHANNEL_ENTRY_OUTLIVES_EXPIRY).timestamp())

    channels.stop_channel(session, gw, channel, now + timedelta(seconds=10))
    assert conn.hget(key, "stopped") == b"1"


def test_push_counts_go_back_to_redis_when_the_database_refuses_them(emulator, ctx, gapp):
    session, gw, config = ctx
    now = emulator.state.clock.now()
    conn = redis(gapp)
    channel = channels.create_channel(session, gw, atlas(session), config, now)
    for number in (3, 8, 11):
        assert take_push(conn, channel.id, channel.token, channel.resource_id, number, utcnow()).verdict == "accepted"

    def database_gone(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("UPDATE WATCH_CHANNELS"):
            raise sa.exc.OperationalError(statement, {}, Exception("server closed the connection"))

    sa.event.listen(db.engine(gapp), "before_cursor_execute", database_gone)
    try:
        with pytest.raises(sa.exc.OperationalError):
            notifications.absorb_push_stats(session, conn, channel.room_id, now)
    finally:
        sa.event.remove(db.engine(gapp), "before_cursor_execute", database_gone)
    assert notifications.pending_pushes(conn, [channel.id])[channel.id].count == 3  # put back, not lost

    assert notifications.absorb_push_stats(session, conn, channel.room_id, now) == 3
    session.expire_all()
    row = session.get(WatchChannel, channel.id)
    assert (row.push_count, row.last_message_number) == (3, 11)
    assert notifications.pending_pushes(conn, [channel.id])[channel.id].count == 0


def test_one_rooms_database_failure_never_stops_the_renewal_of_the_others(emulator, ctx, gapp):
    """Issue #14: the renewal pass isolates each room, database errors included."""
    session, gw, config = ctx
    now = emulator.state.clock.now()
    borealis = make_room(session, calendar_id=BOREALIS, name="Borealis")
    session.commit()
    atlas_id = atlas(session).id

    def atlas_locked(_conn, _cursor, statement, parameters, *_args):
        # As SQLite answered a renewal under load: "database is locked", for Atlas's new channel only.
        values = parameters.values() if isinstance(parameters, dict) else parameters
        if statement.lstrip().upper().startswith("INSERT INTO WATCH_CHANNELS") and atlas_id in tuple(values):
            raise sa.exc.OperationalError(statement, parameters, Exception("database is locked"))

    sa.event.listen(db.engine(gapp), "before_cursor_execute", atlas_locked)
    try:
        report = channels.renew_due(session, gw, config, now)
    finally:
        sa.event.remove(db.engine(gapp), "before_cursor_execute", atlas_locked)
    assert "database is locked" in report.failed[ATLAS]
    [created] = report.created
    assert channels.current_channel(session, borealis, now).id == created
    assert channels.current_channel(session, atlas(session), now) is None
    # The next pass gives Atlas its channel.
    again = channels.renew_due(session, gw, config, now + timedelta(seconds=10))
    assert len(again.created) == 1 and not again.failed
    assert channels.current_channel(session, atlas(session), now + timedelta(seconds=10)).id == again.created[0]


def test_a_renewal_pass_stops_at_the_budget_and_leaves_the_rest_and_the_writes_share(
        emulator, make_app, service_account_file):
    from roombridge.gcal import call_budget

    app = make_app(GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file, GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
                   GOOGLE_MAX_ATTEMPTS=1, WEBHOOK_BASE_URL="http://127.0.0.1:9",
                   GOOGLE_CALLS_PER_MINUTE=40)  # a bucket of 3 tokens: renewals must leave 2
    with app.app_context():
        session = db.session()
        for n in range(6):
            calendar_id = f"bulk-{n}@resource.calendar.google.com"
            emulator.state.add_calendar(calendar_id, f"Bulk {n}", kind="room")
            emulator.state.share(calendar_id, SERVICE_ACCOUNT, "writer")
            make_room(session, calendar_id=calendar_id, name=f"Bulk {n}")
        session.commit()
        emulator.state.clear_requests()
        report = channels.renew_due(session, CalendarGateway.for_app(kind="renewal"), app.config["ROOMBRIDGE"],
                                    emulator.state.clock.now())

    # One channel, then the first refusal ends the pass: the other five wait for the next tick,
    # and no call was made for them.
    assert len(report.created) == 1 and report.deferred == 5 and not report.retry_later
    assert len([r for r in emulator.state.requests() if r["path"].endswith("/watch")]) == 1
    assert call_budget(app).take("write").granted  # a booking's share is still there

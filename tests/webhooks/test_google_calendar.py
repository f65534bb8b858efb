"""The push receiver: the protocol matrix through the test client, then end to end with the
emulator pushing to a live server and a real worker process syncing."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests
from flask import request

from roombridge import api_tokens, db, notifications
from roombridge.db import utcnow
from roombridge.models import ReservationSource, WatchChannel
from roombridge.notifications import request_sync
from roombridge.queue import queue, redis
from tests.factories import make_room
from tests.support import Stack, counting_statements, run_jobs, start_worker, stop_worker, wait_until
from tests.sync_support import ROOM, pushes_counted, reservations, rfc, soon, sync_runs, watched_room
from webapp import security

URL = "/webhooks/google/calendar"
CHANNEL = "0f5d2c4e-8a1b-4c3d-9e7f-123456789abc"  # ids are UUIDs, as roombridge/channels.py issues them
_numbers = itertools.count(100)  # Google's message numbers grow on a channel; a repeated one is a replay


# --- the protocol matrix ------------------------------------------------------------------------------


def _channel(app, **fields) -> WatchChannel:
    with app.app_context():
        session = db.session()
        room = make_room(session)
        channel = WatchChannel(
            id=fields.pop("id", CHANNEL), room_id=room.id, resource_id=fields.pop("resource_id", "res-1"),
            token=fields.pop("token", "s3cret-token"), address="https://example.com" + URL,
            expiration=fields.pop("expiration", utcnow() + timedelta(days=1)), **fields)
        session.add(channel)
        session.commit()
        return channel


def headers(state="exists", **overrides) -> dict:
    h = {
        "X-Goog-Channel-ID": CHANNEL, "X-Goog-Channel-Token": "s3cret-token", "X-Goog-Resource-ID": "res-1",
        "X-Goog-Resource-State": state, "X-Goog-Message-Number": str(next(_numbers)),
        "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/x/events?alt=json",
        "X-Goog-Channel-Expiration": "Sat, 22 Mar 2031 19:14:43 GMT",
    }
    h.update(overrides)
    return {k: v for k, v in h.items() if v is not None}


def queued(app) -> list:
    with app.app_context():
        return [job.args for job in queue("sync").jobs]


def stored(app, channel_id=CHANNEL) -> WatchChannel:
    with app.app_context():
        return db.session().get(WatchChannel, channel_id)


def pending(app, channel_id=CHANNEL) -> notifications.PendingPushes:
    """Pushes counted in Redis, not yet added to the channel's row by a sync."""
    with app.app_context():
        return notifications.pending_pushes(redis(), [channel_id])[channel_id]


def counted(app, channel_id=CHANNEL) -> int:
    return pushes_counted(app, channel_id)


def test_sync_handshake_is_recorded_and_enqueues_nothing(app, client):
    _channel(app)
    response = client.post(URL, headers=headers("sync", **{"X-Goog-Message-Number": "1"}))
    assert response.status_code == 200
    assert stored(app).sync_received_at is not None and counted(app) == 0
    assert queued(app) == []


def test_exists_is_counted_and_requests_one_coalesced_sync(app, client):
    channel = _channel(app)
    for number in ("7", "12", "15"):
        assert client.post(URL, headers=headers(**{"X-Goog-Message-Number": number})).status_code == 200
    assert queued(app) == [(channel.room_id,)]
    assert (pending(app).count, pending(app).last_message_number) == (3, 15)
    assert stored(app).push_count == 0  # the row learns of them with the room's next sync

    with app.app_context():
        assert notifications.absorb_push_stats(db.session(), redis(), channel.room_id, utcnow()) == 3
    after = stored(app)
    assert (after.push_count, after.last_message_number) == (3, 15) and after.last_push_at is not None
    assert pending(app).count == 0
    with app.app_context():  # absorbed once: nothing more to add
        assert notifications.absorb_push_stats(db.session(), redis(), channel.room_id, utcnow()) == 0
    assert stored(app).push_count == 3


def test_a_push_reads_the_database_once_then_only_redis(app, client):
    _channel(app)
    with counting_statements(app) as first:
        assert client.post(URL, headers=headers()).status_code == 200
    with counting_statements(app) as later:
        for _ in range(3):
            assert client.post(URL, headers=headers()).status_code == 200
        assert client.post(URL, headers=headers(**{"X-Goog-Channel-Token": "wrong"})).status_code == 403
    assert len([s for s in first if s.lstrip().upper().startswith("SELECT")]) == 1  # no entry in Redis yet
    assert later == []
    assert pending(app).count == 4


def test_redis_restarted_empty_costs_one_database_read_then_redis_again(app, client):
    _channel(app)
    assert client.post(URL, headers=headers()).status_code == 200
    with app.app_context():
        redis().flushdb()  # a restart without persistence: entries, counts and loaded scripts gone
        redis().script_flush()
    with counting_statements(app) as statements:
        for _ in range(3):
            assert client.post(URL, headers=headers()).status_code == 200
    # The first push read the row (SQLite also sends its BEGIN) and wrote the entry back.
    assert [s.split()[0].upper() for s in statements if s.strip().upper() != "BEGIN"] == ["SELECT"]
    assert pending(app).count == 3


def test_a_channel_stopped_after_it_was_cached_is_ignored_without_the_database(app, client):
    channel = _channel(app)
    assert client.post(URL, headers=headers()).status_code == 200
    with app.app_context():
        session = db.session()
        row = session.get(WatchChannel, channel.id)
        row.stopped_at = utcnow()
        session.commit()
        notifications.cache_channel(redis(), row)  # as stop_channel does after its commit
    with counting_statements(app) as statements:
        response = client.post(URL, headers=headers())
    assert response.status_code == 200 and b"ignored" in response.data and statements == []
    assert pending(app).count == 1


@pytest.mark.parametrize("overrides, status", [
    ({"X-Goog-Channel-ID": "no-such-channel"}, 404),
    ({"X-Goog-Channel-Token": "s3cret-tokeX"}, 403),
    ({"X-Goog-Channel-Token": None}, 403),
    ({"X-Goog-Resource-ID": "res-2"}, 403),
    ({"X-Goog-Channel-ID": None}, 400),
    ({"X-Goog-Resource-ID": None}, 400),
    ({"X-Goog-Resource-State": None}, 400),
    ({"X-Goog-Resource-State": "exploded"}, 400),
    ({"X-Goog-Message-Number": "seven"}, 400),
    ({"X-Goog-Channel-ID": "c" * 65}, 400),
], ids=["unknown-channel", "wrong-token", "no-token", "wrong-resource", "no-channel-id", "no-resource-id",
        "no-state", "unknown-state", "bad-message-number", "channel-id-too-long"])
@pytest.mark.parametrize("cached", [False, True], ids=["checked-in-database", "checked-in-redis"])
def test_refused_pushes_enqueue_and_record_nothing(app, client, overrides, status, cached):
    channel = _channel(app)
    if cached:
        with app.app_context():
            notifications.cache_channel(redis(), channel)
    assert client.post(URL, headers=headers(**overrides)).status_code == status
    assert queued(app) == [] and counted(app) == 0


def test_a_replayed_message_number_is_acknowledged_and_requests_no_sync(app, client):
    channel = _channel(app)
    taken = client.post(URL, headers=headers(**{"X-Goog-Message-Number": "500"}))
    assert (taken.status_code, taken.data) == (200, b"")  # taken: no body
    with app.app_context():
        redis().delete(notifications.sync_key("queued", channel.room_id))  # as the sync job does when it starts
        queue("sync").empty()
    for number in ("500", "0500", "499", "7"):  # the same message again, or an older one
        response = client.post(URL, headers=headers(**{"X-Goog-Message-Number": number}))
        assert (response.status_code, response.data) == (200, b"message already seen; ignored\n"), number
    assert queued(app) == [] and pending(app).count == 1 and pending(app).last_message_number == 500
    # A new message on the channel asks for a sync again.
    assert client.post(URL, headers=headers(**{"X-Goog-Message-Number": "10000000000000000"})).status_code == 200
    assert queued(app) == [(channel.room_id,)] and pending(app).count == 2


def test_replays_stay_refused_after_redis_restarted_empty(app, client):
    channel = _channel(app)
    assert client.post(URL, headers=headers(**{"X-Goog-Message-Number": "900"})).status_code == 200
    with app.app_context():
        notifications.absorb_push_stats(db.session(), redis(), channel.room_id, utcnow())  # a sync: onto the row
        redis().flushdb()
    response = client.post(URL, headers=headers(**{"X-Goog-Message-Number": "900"}))
    assert response.data == b"message already seen; ignored\n" and queued(app) == []


@pytest.mark.parametrize("channel_id", ["chan-1", "the-right-token\x00", CHANNEL.upper(), CHANNEL + " x",
                                        "0f5d2c4e-8a1b-4c3d-9e7f-123456789ab\u0663"])
def test_a_channel_id_we_never_issue_is_refused_without_any_lookup(app, client, channel_id):
    _channel(app)
    with counting_statements(app) as statements:
        response = client.post(URL, headers=headers(**{"X-Goog-Channel-ID": channel_id}))
    assert response.status_code in (400, 404) and statements == []
    with app.app_context():
        assert not redis().keys("roombridge:unknown-channel:*")
    assert queued(app) == [] and counted(app) == 0


def test_forged_pushes_on_an_unknown_channel_cost_one_database_read(app, client):
    _channel(app)
    forged, handshakes = "11111111-2222-4333-8444-555555555555", "11111111-2222-4333-8444-666666666666"
    with counting_statements(app) as statements:
        for _ in range(20):
            assert client.post(URL, headers=headers(**{"X-Goog-Channel-ID": forged})).status_code == 404
            assert client.post(URL, headers=headers("sync", **{"X-Goog-Channel-ID": handshakes})).status_code == 404
    assert sorted(s.split()[0].upper() for s in statements if s.strip().upper() not in ("BEGIN", "BEGIN IMMEDIATE",
                                                                                        "ROLLBACK")) == [
        "SELECT", "UPDATE"]
    assert queued(app) == []


@pytest.mark.parametrize("header", ["X-Goog-Channel-Token", "X-Goog-Resource-ID", "X-Goog-Resource-URI",
                                    "X-Goog-Channel-Expiration"])
def test_a_header_with_a_nul_is_refused_counted_and_changes_nothing(app, client, header):
    from roombridge.metrics import WEBHOOK_PUSHES

    _channel(app)
    good = headers()
    refused = WEBHOOK_PUSHES.labels("refused", "a header holds a NUL character")
    before = refused._value.get()
    with counting_statements(app) as statements:
        response = client.post(URL, headers={**good, header: good[header] + "\x00"})
    assert response.status_code == 400 and statements == []
    assert refused._value.get() == before + 1
    assert queued(app) == [] and counted(app) == 0


@pytest.mark.parametrize("fields", [{"stopped_at": datetime(2030, 1, 1, tzinfo=UTC)},
                                    {"expiration": datetime(2020, 1, 1, tzinfo=UTC)}], ids=["stopped", "expired"])
@pytest.mark.parametrize("cached", [False, True], ids=["checked-in-database", "checked-in-redis"])
def test_stopped_or_expired_channel_is_acknowledged_and_ignored(app, client, fields, cached):
    channel = _channel(app, **fields)
    if cached:
        with app.app_context():
            notifications.cache_channel(redis(), channel)
    response = client.post(URL, headers=headers())
    assert response.status_code == 200 and b"ignored" in response.data
    assert queued(app) == [] and counted(app) == 0


def test_redis_down_answers_503_so_google_retries(make_app, own_redis):
    url, stop, _restart = own_redis
    app = make_app(REDIS_URL=url)
    _channel(app)
    stop()
    assert app.test_client().post(URL, headers=headers()).status_code == 503


def test_database_down_answers_503(make_app):
    app = make_app(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert app.test_client().post(URL, headers=headers()).status_code == 503


# --- served in front of the Flask app (webhooks.PushReceiver) --------------------------------------


def _count(outcome: str, reason: str) -> float:
    from roombridge.metrics import WEBHOOK_PUSHES

    return WEBHOOK_PUSHES.labels(outcome, reason)._value.get()


def test_every_answer_to_a_push_carries_the_security_headers_and_is_counted_by_reason(app, client):
    _channel(app)
    expected_headers = security.answer_headers(app.config["ROOMBRIDGE"])
    cases = [  # (headers, status, how it is counted)
        (headers(), 200, ("taken", "sync requested")),
        (headers(**{"X-Goog-Resource-URI": "https://x\x00"}), 400, ("refused", "a header holds a NUL character")),
        (headers(**{"X-Goog-Channel-Token": "wrong"}), 403, ("refused", "wrong token")),
        (headers(**{"X-Goog-Channel-ID": "not-one-of-ours"}), 404, ("refused", "unknown channel")),
        (headers(state=None), 400, ("refused", "X-Goog-Resource-State missing or unknown")),
    ]
    for sent, status, counted_as in cases:
        before = _count(*counted_as)
        response = client.post(URL, headers=sent)
        assert response.status_code == status, response.data
        # A taken push is answered without a body (Google reads only the status); the others say why.
        assert response.data == (b"" if status == 200 else counted_as[1].encode() + b"\n")
        assert response.mimetype == (None if status == 200 else "text/plain")
        assert {name: response.headers.get(name) for name in expected_headers} == expected_headers
        assert _count(*counted_as) == before + 1, counted_as
    assert "Content-Security-Policy" in expected_headers and "Strict-Transport-Security" not in expected_headers


def test_a_push_in_production_carries_hsts(make_app):
    app = make_app(ENV="production", AUTH_MODE="oidc", ALLOWED_DOMAINS="example.com")
    response = app.test_client().post(URL, headers=headers())
    assert response.status_code == 404  # no such channel in this app
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert response.headers["X-Frame-Options"] == "DENY"


def test_a_push_with_a_body_over_the_limit_is_refused_413_counted_and_changes_nothing(app, client):
    _channel(app)
    before = _count("refused", "body too large")
    with counting_statements(app) as statements:
        response = client.post(URL, headers=headers(), data=b"x" * (security.MAX_BODY_BYTES + 1))
    assert response.status_code == 413 and statements == []
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert _count("refused", "body too large") == before + 1
    assert queued(app) == [] and counted(app) == 0
    assert client.post(URL, headers=headers(), data=b"x" * 100).status_code == 200  # a small one is no reason


def test_a_chunked_push_body_over_the_limit_is_refused_413(app, live_server_factory):
    _channel(app)
    server = live_server_factory(app)
    body = b"x" * (security.MAX_BODY_BYTES + 50 * 1024)
    answer = requests.post(server.url + URL, headers=headers(), timeout=30,
                           data=(body[n:n + 16 * 1024] for n in range(0, len(body), 16 * 1024)))
    assert answer.request.headers.get("Transfer-Encoding") == "chunked"
    assert answer.status_code == 413
    assert queued(app) == [] and counted(app) == 0


def test_only_post_is_answered_with_405_otherwise(client):
    response = client.get(URL)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_a_push_skips_the_hooks_the_app_runs_for_people_and_the_rest_still_runs_them(app, client):
    _channel(app)
    seen = []
    app.before_request(lambda: seen.append(request.path))
    client.set_cookie("session", "whatever-a-browser-had")
    response = client.post(URL, headers=headers())
    assert response.status_code == 200 and seen == []
    assert "Set-Cookie" not in response.headers and "Vary" not in response.headers  # no session opened
    assert client.post(URL + "/", headers=headers()).status_code == 404  # any other path is the app's
    assert client.get("/healthz").status_code == 200
    assert seen == [URL + "/", "/healthz"]


# --- end to end: emulator -> live webhook -> Redis -> worker process -> database -> JSON API -----------


@pytest.fixture
def stack(request, emulator, google_app, live_server_factory):
    """A room with a live push channel to a served app, and a worker process on the sync queue.

    Parametrise it indirectly with a dict to give the worker more settings.
    """
    room_id, channel = watched_room(emulator, google_app, live_server_factory)
    with google_app.app_context():
        token = api_tokens.create(db.session(), "admin@example.com").token
    worker = start_worker(google_app, "sync", "default", **getattr(request, "param", {}))
    api = google_app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    yield Stack(app=google_app, emulator=emulator, rooms={"Atlas": room_id}, channel_id=channel.id, api=api)
    stop_worker(worker)


@pytest.mark.slow
def test_bookings_made_in_google_come_back_through_the_api(stack):
    emulator, start = stack.emulator, soon()
    event = emulator.state.book("bob@example.com", ROOM, "Board meeting", rfc(start), rfc(start + timedelta(hours=1)))

    [booked] = wait_until(stack.api_reservations, what="the Google booking in the API")
    assert (booked["source"], booked["status"]) == ("google", "confirmed")
    assert booked["google_event_id"] == event["id"] and booked["organiser"] == "bob@example.com"
    assert booked["start"].startswith(rfc(start)[:16])

    emulator.state.patch_person_event("bob@example.com", event["id"], {"start": rfc(start + timedelta(hours=2)),
                                                                        "end": rfc(start + timedelta(hours=3))})
    moved = rfc(start + timedelta(hours=2))[:16]
    wait_until(lambda: [r for r in stack.api_reservations() if r["start"].startswith(moved)], what="the move")

    emulator.state.delete_person_event("bob@example.com", event["id"])
    wait_until(lambda: stack.api.get(f"/api/v1/reservations/{booked['id']}").get_json()["status"] == "cancelled",
             what="the cancellation")
    assert stack.api_reservations() == []
    assert counted(stack.app, stack.channel_id) >= 3


@pytest.mark.slow
def test_weekly_series_and_our_own_reservation(stack):
    emulator, start = stack.emulator, soon(hour=9)
    emulator.state.book("bob@example.com", ROOM, "Weekly sync", rfc(start), rfc(start + timedelta(minutes=30)),
                        recurrence=["RRULE:FREQ=WEEKLY;COUNT=5"])
    found = wait_until(lambda: len(stack.api_reservations()) == 5 and stack.api_reservations(), what="5 instances")
    assert [r["start"][:16] for r in found] == [rfc(start + timedelta(weeks=n))[:16] for n in range(5)]

    # Booked here through the API: pushed to Google by the push job, echoed back by the channel.
    ours = stack.api.post("/api/v1/reservations", json={
        "room_id": stack.room_id, "title": "Ours", "start": rfc(start + timedelta(hours=2)),
        "end": rfc(start + timedelta(hours=3))}).get_json()
    run_jobs(stack.app, queues=("write",))
    wait_until(lambda: stack.api.get(f"/api/v1/reservations/{ours['id']}").get_json()["status"] == "confirmed",
             what="our reservation confirmed")
    wait_until(lambda: sync_runs(emulator) >= 2 and not queued(stack.app), what="the echo to be synced")
    time.sleep(0.3)
    titles = [r["title"] for r in stack.api_reservations()]
    assert titles.count("Ours") == 1 and len(titles) == 6
    assert [r.source for r in reservations(stack.app, stack.room_id) if r.title == "Ours"] == [ReservationSource.API]


def _arrival_spread(emulator, channel_id) -> float:
    """Seconds between the first and the last exists push the webhook accepted."""
    times = [datetime.fromisoformat(p["time"].replace("Z", "+00:00")) for p in emulator.state.pushes(channel_id)
             if p["state"] == "exists" and p["outcome"] == "delivered"]
    return (max(times) - min(times)).total_seconds()


# The bound is one sync per SYNC_MIN_INTERVAL_SECONDS (3 s here) that the burst spans, plus one
# follow-up for the pushes that arrive during the last sync: a burst the webhook takes in within
# one interval gives at most two. The span is read from the emulator's log of delivered pushes,
# so a loaded machine that takes the burst in slowly is allowed the syncs that span paid for.
@pytest.mark.slow
@pytest.mark.parametrize("stack", [{"SYNC_MIN_INTERVAL_SECONDS": "3"}], indirect=True)
def test_a_hundred_pushes_in_a_second_lead_to_at_most_two_syncs(stack):
    emulator, start = stack.emulator, soon(days=2, hour=0)
    # The worker is up and idle, the room synced once (as after channel creation), its pacing interval over.
    with stack.app.app_context():
        request_sync(stack.room_id)
    wait_until(lambda: sync_runs(emulator) == 1 and not queued(stack.app), what="the first sync")
    time.sleep(3.2)
    for n in range(100):
        emulator.state.book("bob@example.com", ROOM, f"Slot {n}", rfc(start + timedelta(minutes=30 * n)),
                            rfc(start + timedelta(minutes=30 * n + 30)))
    wait_until(lambda: len(reservations(stack.app, stack.room_id)) == 100, timeout=20, what="the mirror")
    wait_until(lambda: counted(stack.app, stack.channel_id) == 100, what="every push")
    time.sleep(3.5)  # room for a third sync, had the pushes caused one
    runs = sync_runs(emulator) - 1
    spread = _arrival_spread(emulator, stack.channel_id)
    outcomes = Counter(p["outcome"] for p in emulator.state.pushes(stack.channel_id) if p["state"] == "exists")
    print(f"{runs} sync run(s) for 100 pushes received over {spread:.2f}s: {dict(outcomes)}")
    assert 1 <= runs <= 2 + int(spread // 3)
    assert sorted(r.title for r in reservations(stack.app, stack.room_id)) == sorted(f"Slot {n}" for n in range(100))


@pytest.mark.slow
def test_redis_down_then_back_nothing_is_lost(emulator, make_app, service_account_file, own_redis, live_server_factory):
    url, stop, restart = own_redis
    app = make_app(REDIS_URL=url, GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file,
                   GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url)
    room_id, channel = watched_room(emulator, app, live_server_factory)
    emulator.state.update_settings(push_retry_base=0.3, push_max_attempts=8)

    stop()
    start = soon()
    emulator.state.book("bob@example.com", ROOM, "During the outage", rfc(start), rfc(start + timedelta(hours=1)))
    wait_until(lambda: [p for p in emulator.state.pushes(channel.id) if p["status"] == 503], what="a 503")
    restart()
    wait_until(lambda: [p for p in emulator.state.pushes(channel.id) if p["state"] == "exists"
                      and p["outcome"] == "delivered"], what="Google's retry to get through")
    run_jobs(app, queues=("sync",))
    assert [r.title for r in reservations(app, room_id)] == ["During the outage"]

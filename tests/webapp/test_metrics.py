"""GET /metrics: never public, Prometheus' text format, counters of every process, gauges read at scrape."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from roombridge import db
from roombridge.db import utcnow
from roombridge.models import ReservationStatus, RoomSyncState, WatchChannel
from roombridge.queue import queue
from tests.factories import make_reservation, make_room
from tests.support import SERVICE_ACCOUNT

REPO = Path(__file__).resolve().parents[2]
TOKEN = "scrape-me"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_not_served_without_a_token_configured(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers=AUTH).status_code == 404


def test_refused_without_the_token(make_app):
    client = make_app(METRICS_TOKEN=TOKEN).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN + "x"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401 and b"roombridge" not in response.data


def test_gauges_are_read_from_the_database_and_redis_at_each_scrape(make_app):
    app = make_app(METRICS_TOKEN=TOKEN)
    now = utcnow()
    with app.app_context():
        session = db.session()
        stale, fresh, never = (make_room(session, calendar_id=f"{n}@resource.calendar.google.com")
                               for n in ("stale", "fresh", "never"))
        make_room(session, calendar_id="gone@resource.calendar.google.com", in_scope=False)
        session.add_all([RoomSyncState(room_id=stale.id, last_sync_at=now - timedelta(hours=2)),
                         RoomSyncState(room_id=fresh.id, last_sync_at=now - timedelta(seconds=30))])
        session.add(WatchChannel(id="c-fresh", room_id=fresh.id, token="t", address="https://x/hook",
                                 expiration=now + timedelta(days=3)))
        session.add(WatchChannel(id="c-stale", room_id=stale.id, token="t", address="https://x/hook",
                                 expiration=now + timedelta(hours=5)))
        make_reservation(session, stale, start=now + timedelta(days=1))
        make_reservation(session, stale, start=now + timedelta(days=2), status=ReservationStatus.FAILED)
        make_reservation(session, fresh, start=now + timedelta(days=1), status=ReservationStatus.CONFIRMED)
        session.commit()
        queue("write").enqueue("jobs.reservations.write_reservation", 0)  # waits: no worker runs here

    found = samples(app.test_client().get("/metrics", headers=AUTH).get_data(as_text=True))

    assert found[("roombridge_metrics_source_up", (("source", "database"),))] == 1
    assert found[("roombridge_metrics_source_up", (("source", "redis"),))] == 1
    assert found[("roombridge_reservations", (("status", "pending"),))] == 1
    assert found[("roombridge_reservations", (("status", "failed"),))] == 1
    assert found[("roombridge_queue_jobs", (("queue", "write"),))] == 1
    assert found[("roombridge_queue_jobs", (("queue", "sync"),))] == 0
    assert found[("roombridge_google_budget_calls_per_minute", ())] == 500
    assert found[("roombridge_google_budget_tokens_left", ())] == 25
    assert found[("roombridge_google_pause_seconds", ())] == 0
    # Channels: the stale room's expires first; the never-synced room has none.
    assert 4 * 3600 < found[("roombridge_channel_expiry_horizon_seconds", ())] <= 5 * 3600
    assert found[("roombridge_rooms_without_live_channel", ())] == 1
    # Sync lag over the three rooms in scope: one within a minute, one within six hours, one never.
    assert found[("roombridge_sync_lag_seconds_bucket", (("le", "60.0"),))] == 1
    assert found[("roombridge_sync_lag_seconds_bucket", (("le", "3600.0"),))] == 1
    assert found[("roombridge_sync_lag_seconds_bucket", (("le", "21600.0"),))] == 2
    assert found[("roombridge_sync_lag_seconds_bucket", (("le", "+Inf"),))] == 3
    assert found[("roombridge_rooms_never_synced", ())] == 1
    stalest = {labels: v for (name, labels), v in found.items() if name == "roombridge_room_sync_lag_seconds"}
    assert list(stalest) == [(("room", "stale@resource.calendar.google.com"),),
                             (("room", "fresh@resource.calendar.google.com"),)]


def test_the_webhook_counts_pushes_taken_and_refused_by_reason(make_app):
    app = make_app(METRICS_TOKEN=TOKEN)
    client = app.test_client()
    labels = {"outcome": "refused", "reason": "unknown channel"}
    before = REGISTRY.get_sample_value("roombridge_webhook_pushes_total", labels) or 0

    response = client.post("/webhooks/google/calendar", headers={
        "X-Goog-Channel-ID": "nobody", "X-Goog-Resource-ID": "r", "X-Goog-Resource-State": "exists"})

    assert response.status_code == 404
    found = samples(client.get("/metrics", headers=AUTH).get_data(as_text=True))
    assert found[("roombridge_webhook_pushes_total", tuple(sorted(labels.items())))] == before + 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_multiprocess_mode_adds_up_the_calls_of_worker_processes(make_google_app, emulator, tmp_path, monkeypatch):
    """A worker process counts its Google calls in PROMETHEUS_MULTIPROC_DIR; the web process serves the sum."""
    room = "atlas@resource.calendar.google.com"
    app = make_google_app(METRICS_TOKEN=TOKEN)
    emulator.state.add_calendar(room, "Atlas", kind="room")
    emulator.state.share(room, SERVICE_ACCOUNT, "writer")
    with app.app_context():
        make_room(db.session(), calendar_id=room)
        db.session().commit()
    config, shared = app.config["ROOMBRIDGE"], tmp_path / "prometheus"
    shared.mkdir()
    env = {**os.environ, "ENV": "development", "SECRET_KEY": "x", "DATABASE_URL": config.DATABASE_URL,
           "REDIS_URL": config.REDIS_URL, "GOOGLE_SERVICE_ACCOUNT_FILE": config.GOOGLE_SERVICE_ACCOUNT_FILE,
           "GOOGLE_CALENDAR_API_URL": config.GOOGLE_CALENDAR_API_URL, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    for kinds in ("sync\nsync\n", "write\n"):  # two worker processes, one after the other
        worker = subprocess.run([sys.executable, "-m", "tests.roombridge.budget_process", "gateway", room],
                                cwd=REPO, env=env, input=kinds, capture_output=True, text=True, timeout=60)
        assert worker.stdout.count('"ok": true') == kinds.count("\n"), worker.stderr

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    found = samples(app.test_client().get("/metrics", headers=AUTH).get_data(as_text=True))

    assert found[("roombridge_google_calls_total", (("kind", "sync"), ("outcome", "ok")))] == 2
    assert found[("roombridge_google_calls_total", (("kind", "write"), ("outcome", "ok")))] == 1

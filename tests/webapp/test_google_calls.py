"""The Google call log's admin pages and `flask --app wsgi google calls`."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from roombridge import db
from roombridge.call_log import CallLog, CallRecord
from roombridge.db import utcnow
from roombridge.models import GoogleCall
from roombridge.queue import redis
from tests.factories import make_room
from tests.support import free_port, invoke_ok
from tests.webapp.signin import sign_in

ATLAS = "atlas@resource.calendar.google.com"
BOREALIS = "borealis@resource.calendar.google.com"


def _row(at, room_id, **fields) -> dict:
    return {"at": at, "room_id": room_id, "calendar_id": None, "operation": "events.list", "kind": "sweep",
            "outcome": "ok", "status": 200, "duration_ms": 40, **fields}


@pytest.fixture
def logged(app):
    """Atlas (in scope) with 60 calls in the last hour and one 3 days ago; Borealis out of scope, one refusal."""
    now = utcnow()
    with app.app_context():
        session = db.session()
        atlas = make_room(session, calendar_id=ATLAS, name="Atlas")
        borealis = make_room(session, calendar_id=BOREALIS, name="Borealis", in_scope=False)
        rows = [_row(now - timedelta(seconds=30 * i), atlas.id, duration_ms=i) for i in range(59)]
        rows.append(_row(now - timedelta(minutes=40), atlas.id, operation="events.insert", kind="write",
                         outcome="rate_limited", status=429, duration_ms=999))
        rows.append(_row(now - timedelta(days=3), atlas.id, operation="events.watch", kind="renewal"))
        session.execute(sa.insert(GoogleCall), rows)
        session.commit()
        return {"atlas": atlas.id, "borealis": borealis.id}


def refuse(app, calendar_id: str) -> None:
    """A refusal as the gateway records it, flushed to the table."""
    from roombridge import call_log

    with app.app_context():
        CallLog(redis()).record(CallRecord(utcnow().timestamp(), calendar_id, "events.list", "sweep",
                                           "refused_by_allowlist", None, 0))
        call_log.flush(db.session(), redis())


def test_the_pages_are_for_admins_only(client, logged):
    for path in ("/admin/google-calls", f"/admin/rooms/{logged['atlas']}/google-calls"):
        assert client.get(path).status_code == 302  # signed out: to the sign-in page
    sign_in(client, "alice@example.com")
    for path in ("/admin/google-calls", f"/admin/rooms/{logged['atlas']}/google-calls"):
        refused = client.get(path)
        assert refused.status_code == 403 and "Admins only" in refused.get_data(as_text=True)
        assert "events.insert" not in refused.get_data(as_text=True)


def test_the_summary_says_what_the_service_account_can_do_and_counts_by_kind_outcome_and_room(client, logged):
    sign_in(client, "admin@example.com")
    page = client.get("/admin/google-calls").get_data(as_text=True)
    assert "https://www.googleapis.com/auth/calendar.events" in page
    assert 'id="calendars-in-scope">1<' in page  # Borealis is not in scope
    assert 'id="refused">0 ' in page and "refusals-alert" not in page
    assert 'id="non-room">0<' in page
    assert "60 call(s) in the window, on 1 room(s)" in page  # the day's; the call 3 days ago is outside
    assert "<code>events.insert</code>: 1" in page and "<code>events.list</code>: 59" in page
    assert f'href="/admin/rooms/{logged["atlas"]}/google-calls">Atlas</a>' in page
    everything = client.get("/admin/google-calls?hours=168").get_data(as_text=True)
    assert "61 call(s) in the window" in everything and "<code>events.watch</code>: 1" in everything
    last_hour = client.get("/admin/google-calls?hours=1").get_data(as_text=True)
    assert "60 call(s) in the window" in last_hour
    for unknown in (5, 336):  # not a window offered (a fortnight would scan ~12M rows at 10,000 rooms)
        assert "60 call(s) in the window" in client.get(f"/admin/google-calls?hours={unknown}").get_data(as_text=True)


def test_a_refusal_is_shown_prominently_with_its_calendar(app, client, logged):
    refuse(app, BOREALIS)
    refuse(app, "ceo@example.com")
    sign_in(client, "admin@example.com")
    page = client.get("/admin/google-calls").get_data(as_text=True)
    assert 'role="alert" id="refusals-alert"' in page and "<strong>2</strong> call(s)" in page
    assert f"<code>{BOREALIS}</code>: 1" in page and "<code>ceo@example.com</code>: 1" in page
    assert 'id="non-room">0<' in page  # refused, so never made
    borealis = client.get(f"/admin/rooms/{logged['borealis']}/google-calls").get_data(as_text=True)
    assert "refused_by_allowlist" in borealis and "This room is not in scope" in borealis


def test_a_room_page_filters_by_kind_and_outcome_and_pages_newest_first(client, logged):
    sign_in(client, "admin@example.com")
    path = f"/admin/rooms/{logged['atlas']}/google-calls"
    first = client.get(path).get_data(as_text=True)
    assert first.count("<tr><th scope=\"row\"><time") == 50 and 'rel="next"' in first and 'rel="prev"' not in first
    assert ">0 ms<" in first  # the newest first
    second = client.get(f"{path}?page=2").get_data(as_text=True)
    assert second.count("<tr><th scope=\"row\"><time") == 11 and 'rel="next"' not in second
    assert "events.watch" in second  # kept for the retention window, though 3 days old
    writes = client.get(f"{path}?kind=write").get_data(as_text=True)
    assert writes.count("<tr><th scope=\"row\"><time") == 1 and "rate_limited" in writes and ">429<" in writes
    limited = client.get(f"{path}?outcome=rate_limited&kind=sweep").get_data(as_text=True)
    assert "No calls match these filters" in limited
    assert client.get("/admin/rooms/99999/google-calls").status_code == 404
    room_page = client.get(f"/admin/rooms/{logged['atlas']}").get_data(as_text=True)
    assert f'href="{path}"' in room_page


def test_cli_google_calls_summary_and_one_room(app, logged):
    refuse(app, "ceo@example.com")
    runner = app.test_cli_runner()
    summary = invoke_ok(runner, ["google", "calls"]).output
    assert "scope https://www.googleapis.com/auth/calendar.events on 1 room calendar(s) in scope" in summary
    assert "refused by the allowlist in the last 24 hour(s): 1 (zero expected)" in summary
    assert "REFUSED ceo@example.com: 1" in summary
    assert f"{ATLAS}\t60\t1" in summary
    room = invoke_ok(runner, ["google", "calls", "--room", ATLAS, "--limit", "5", "--hours", "1"]).output
    assert f"{ATLAS}: 5 call(s) in the last 1 hour(s)" in room
    assert len([line for line in room.splitlines() if "\tevents.list\tsweep\tok\t200\t" in line]) == 5
    unknown = runner.invoke(args=["google", "calls", "--room", "nowhere@resource.calendar.google.com"])
    assert unknown.exit_code == 1 and "not a room" in unknown.output


def test_metrics_show_the_records_waiting_and_the_records_dropped(make_app):
    from redis import Redis

    app = make_app(METRICS_TOKEN="scrape-me")
    record = CallRecord(utcnow().timestamp(), ATLAS, "events.list", "sync", "ok", 200, 7)
    with app.app_context():
        for _ in range(3):
            CallLog(redis()).record(record)
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens: the record is dropped
    CallLog(nowhere).record(record)
    text = app.test_client().get("/metrics", headers={"Authorization": "Bearer scrape-me"}).get_data(as_text=True)
    assert "roombridge_google_call_log_buffered 3.0" in text
    assert 'roombridge_google_call_log_dropped_total{reason="unavailable"}' in text

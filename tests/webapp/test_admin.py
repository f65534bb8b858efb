"""The admin verbs from the command line (rooms, channels, sync) and the admin console, against the emulator."""

from __future__ import annotations

import html as html_lib
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from rq.registry import FailedJobRegistry

from roombridge import db, rooms
from roombridge.db import utcnow
from roombridge.gcal import CalendarGateway
from roombridge.models import Reservation, ReservationSource, ReservationStatus, Room, RoomSyncState, WatchChannel
from roombridge.queue import queue, redis
from tests.factories import make_reservation, make_room
from tests.support import SERVICE_ACCOUNT, counting_statements, invoke_ok, run_jobs, shared_room
from tests.sync_support import take_pushes
from tests.webapp.signin import csrf_token, sign_in

ATLAS = "atlas@resource.calendar.google.com"
BOREALIS = "borealis@resource.calendar.google.com"


@pytest.fixture
def cli(make_google_app, emulator):
    shared_room(emulator, ATLAS, "Atlas")
    shared_room(emulator, BOREALIS, "Borealis", role=None)
    app = make_google_app(GOOGLE_MAX_ATTEMPTS=1, WEBHOOK_BASE_URL="http://127.0.0.1:9")
    return app.test_cli_runner()


def test_rooms_add_list_renew_sync_remove(cli, emulator):
    added = invoke_ok(cli, ["rooms", "add", ATLAS, "--name", "Atlas", "--capacity", "8",
                            "--features", "projector,whiteboard", "--time-zone", "Europe/London"])
    assert f"added {ATLAS} (Atlas); Google grants 'writer'" in added.output
    assert "first full sync requested" in added.output
    listed = invoke_ok(cli, ["rooms", "list"]).output
    assert ATLAS in listed and "role writer" in listed and "healthy" in listed
    [first] = [c["id"] for c in emulator.state.channels_info()]
    assert first in invoke_ok(cli, ["channels", "list"]).output
    # A push, before any sync added it to the channel's row: the list counts it all the same.
    google = next(c for c in emulator.state.channels_info() if c["id"] == first)
    pushed = cli.app.test_client().post("/webhooks/google/calendar", headers={
        "X-Goog-Channel-ID": first, "X-Goog-Channel-Token": google["token"],
        "X-Goog-Resource-ID": google["resourceId"], "X-Goog-Resource-State": "exists"})
    assert pushed.status_code == 200
    assert "pushes 1" in invoke_ok(cli, ["channels", "list"]).output

    renewed = invoke_ok(cli, ["channels", "renew", "--room", ATLAS]).output
    google = {c["id"]: c["stopped"] for c in emulator.state.channels_info()}
    [second] = [cid for cid, stopped in google.items() if not stopped]
    assert google[first] is True and second in renewed

    synced = invoke_ok(cli, ["sync", ATLAS, "--full"]).output
    assert f"synced {ATLAS} (full)" in synced

    removed = invoke_ok(cli, ["rooms", "remove", ATLAS]).output
    assert f"removed {ATLAS} from scope" in removed
    assert all(c["stopped"] for c in emulator.state.channels_info())
    assert "no rooms in scope" in invoke_ok(cli, ["rooms", "list"]).output
    assert "[out of scope]" in invoke_ok(cli, ["rooms", "list", "--all"]).output


def test_cli_sync_waits_for_a_workers_sync_of_the_room(cli, emulator, monkeypatch):
    import roombridge.sync

    invoke_ok(cli, ["rooms", "add", ATLAS, "--name", "Atlas"])
    with cli.app.app_context():
        room_id = db.session().scalar(sa.select(Room.id).where(Room.calendar_id == ATLAS))
        worker_lock = roombridge.sync.RoomLock(redis(), room_id)
        assert worker_lock.acquire()
    monkeypatch.setattr(roombridge.sync, "LOCK_WAIT_SECONDS", 0.2)
    emulator.state.clear_requests()
    try:
        busy = cli.invoke(args=["sync", ATLAS])
    finally:
        worker_lock.release()
    assert busy.exit_code == 1 and "is being synced by a worker" in busy.output
    assert not [r for r in emulator.state.requests() if r["method"] == "GET"]  # Google not asked
    assert f"synced {ATLAS} (incremental)" in invoke_ok(cli, ["sync", ATLAS]).output


def test_rooms_add_refuses_a_calendar_not_shared_with_the_service_account(cli, emulator):
    result = cli.invoke(args=["rooms", "add", BOREALIS, "--name", "Borealis"])
    assert result.exit_code == 1
    assert f"{BOREALIS} was not added" in result.output and "not shared with" in result.output
    assert emulator.state.channels_info() == []


def test_unknown_room_is_a_clear_cli_error(cli):
    for args in (["rooms", "remove", BOREALIS], ["channels", "renew", "--room", BOREALIS], ["sync", BOREALIS]):
        result = cli.invoke(args=args)
        assert result.exit_code == 1 and "is not a room in scope" in result.output


# --- the admin console, through the Flask test client ----------------------------------------------


ADMIN = "admin@example.com"
CONSOLE_PAGES = ("/admin/", "/admin/rooms/new", "/admin/jobs", "/admin/setup")


@pytest.fixture
def console(make_app, emulator, service_account_file):
    """An app wired to the emulator, Atlas shared with the service account, Borealis shared with nobody."""
    emulator.state.add_calendar(ATLAS, "Atlas", kind="room")
    emulator.state.share(ATLAS, SERVICE_ACCOUNT, "writer")
    emulator.state.add_calendar(BOREALIS, "Borealis", kind="room")
    return make_app(GOOGLE_SERVICE_ACCOUNT_FILE=service_account_file,
                    GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
                    GOOGLE_MAX_ATTEMPTS=1, WEBHOOK_BASE_URL="http://127.0.0.1:9")


def _admin_client(app):
    client = app.test_client()
    sign_in(client, ADMIN)
    return client


def _post(client, path, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/"), **data})


def _error_by(html: str, field: str) -> str:
    match = re.search(rf'<div class="field-error" id="{field}-error">(.*?)</div>', html, re.S)
    assert match, f"no error shown by {field}"
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def _add_form(calendar_id, **overrides):
    return {"calendar_id": calendar_id, "name": "Atlas", "capacity": "8", "building": "HQ", "floor": "2",
            "features": "projector, whiteboard", "time_zone": "Europe/London", **overrides}


def _add_atlas(app):
    """Atlas in scope with a live channel, through the domain (as the CLI would)."""
    with app.app_context():
        session = db.session()
        added = rooms.add_room(session, CalendarGateway.for_app(kind="write"), app.config["ROOMBRIDGE"], ATLAS,
                               name="Atlas", now=utcnow(), actor="test")
        queue("sweep").empty()  # the first full sync is not what these tests are about
        redis().flushdb()
        return added.room.id, added.channel.id


def test_console_is_for_admins_only(app):
    anonymous = app.test_client()
    for path in CONSOLE_PAGES:
        response = anonymous.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/signin?next=/admin")
    employee = app.test_client()
    sign_in(employee, "alice@example.com")
    token = csrf_token(employee, "/")
    for path in CONSOLE_PAGES:
        refused = employee.get(path)
        assert refused.status_code == 403 and "Admins only" in refused.get_data(as_text=True)
    for path in ("/admin/rooms/new", "/admin/setup/check", "/admin/jobs/default/x/retry"):
        assert employee.post(path, data={"csrf_token": token}).status_code == 403
    admin = _admin_client(app)
    for path in CONSOLE_PAGES:
        assert admin.get(path).status_code == 200, path


def test_console_forms_need_a_csrf_token(app):
    admin = _admin_client(app)
    assert admin.post("/admin/setup/check").status_code == 400


def test_adding_a_calendar_not_shared_is_refused_by_its_field(console, emulator):
    admin = _admin_client(console)
    response = _post(admin, "/admin/rooms/new", **_add_form(BOREALIS, name="Borealis"))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    message = _error_by(html, "calendar_id")
    assert f"{BOREALIS} was not added" in message and f"not shared with {SERVICE_ACCOUNT}" in message
    assert 'aria-invalid="true"' in re.search(r'<input id="calendar_id"[^>]*>', html).group(0)
    assert 'value="Borealis"' in html  # what was typed is kept
    with console.app_context():
        assert db.session().scalar(sa.select(sa.func.count()).select_from(Room)) == 0
    assert emulator.state.channels_info() == []


def test_bad_room_fields_are_each_shown_by_their_field_before_google_is_asked(console, emulator):
    admin = _admin_client(console)
    emulator.state.clear_requests()
    response = _post(admin, "/admin/rooms/new", **_add_form("atlas@example.com", name="", capacity="many",
                                                             time_zone="Mars/Olympus"))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "not a room calendar address" in _error_by(html, "calendar_id")
    assert "needs a name" in _error_by(html, "name")
    assert "whole number" in _error_by(html, "capacity")
    assert "Unknown time zone 'Mars/Olympus'" in _error_by(html, "time_zone")
    assert 'class="error-summary"' in html and '<a href="#capacity">' in html
    assert [r for r in emulator.state.requests() if "/calendar/v3/" in r["path"]] == []


def test_adding_a_shared_room_shows_its_channel_and_requests_a_full_sync(console, emulator):
    admin = _admin_client(console)
    response = _post(admin, "/admin/rooms/new", **_add_form(ATLAS))
    assert response.status_code == 302
    [channel] = emulator.state.channels_info()
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "Atlas added: Google grants the service account &#39;writer&#39; access." in page
    assert f'<dd id="channel-id">{channel["id"]}</dd>' in page
    assert re.search(r'<dd id="channel-expiry">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 6 days 23 hours\)</dd>', page)
    assert [j.func_name for j in queue("sweep", console).jobs] == ["jobs.sync.sweep_room"]  # paced by the budget
    with console.app_context():
        room = db.session().scalar(sa.select(Room))
        assert (room.calendar_id, room.capacity, room.features) == (ATLAS, 8, ["projector", "whiteboard"])
    assert ATLAS in admin.get("/admin/").get_data(as_text=True)


def test_editing_a_room_saves_it_and_shows_bad_fields(console):
    room_id, _ = _add_atlas(console)
    admin = _admin_client(console)
    fields = {"name": "Atlas (big)", "capacity": "12", "building": "", "floor": "3", "features": "display",
              "time_zone": "Europe/Paris", "bookable_hours": "08:00-18:00", "max_duration_minutes": "120",
              "max_days_ahead": "", "min_notice_minutes": "0"}
    assert _post(admin, f"/admin/rooms/{room_id}", **fields).status_code == 302
    with console.app_context():
        room = db.session().get(Room, room_id)
        assert (room.name, room.capacity, room.bookable_hours, room.max_days_ahead) == ("Atlas (big)", 12,
                                                                                         "08:00-18:00", None)
    response = _post(admin, f"/admin/rooms/{room_id}", **{**fields, "bookable_hours": "8 till 6", "capacity": "0"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "look like 08:00-18:00" in _error_by(html, "bookable_hours")
    assert "too small" in _error_by(html, "capacity")


def test_removing_a_room_stops_its_channel(console, emulator):
    room_id, channel_id = _add_atlas(console)
    admin = _admin_client(console)
    assert "Yes, remove it" in admin.get(f"/admin/rooms/{room_id}/remove").get_data(as_text=True)
    response = _post(admin, f"/admin/rooms/{room_id}/remove")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    assert {c["id"]: c["stopped"] for c in emulator.state.channels_info()} == {channel_id: True}
    with console.app_context():
        assert db.session().get(Room, room_id).in_scope is False
    assert "removed from scope" in admin.get("/admin/").get_data(as_text=True)
    assert admin.get(f"/admin/rooms/{room_id}").status_code == 404


def test_renew_enqueues_the_renewal_and_the_page_follows_it(console, emulator):
    room_id, first = _add_atlas(console)
    admin = _admin_client(console)
    response = _post(admin, f"/admin/rooms/{room_id}/renew")
    assert response.headers["Location"] == f"/admin/rooms/{room_id}?awaiting=channel"
    [job] = queue("channels", console).jobs
    assert (job.func_name, job.args) == ("jobs.channels.renew_room_channel", (room_id, ADMIN))
    assert admin.get(f"/admin/rooms/{room_id}/status.json").json["channel"]["id"] == first

    assert run_jobs(console, queues=("channels",)) == 1
    google = {c["id"]: c["stopped"] for c in emulator.state.channels_info()}
    [second] = [cid for cid, stopped in google.items() if not stopped]
    assert google[first] is True
    status = admin.get(f"/admin/rooms/{room_id}/status.json").json
    assert status["channel"]["id"] == second and "in 6 days 23 hours" in status["channel"]["expiration_text"]
    assert 'data-awaiting="channel"' in admin.get(f"/admin/rooms/{room_id}?awaiting=channel").get_data(as_text=True)


def test_resync_buttons_request_an_incremental_or_a_full_sync(console):
    room_id, _ = _add_atlas(console)
    admin = _admin_client(console)
    response = _post(admin, f"/admin/rooms/{room_id}/sync", kind="incremental")
    assert response.headers["Location"] == f"/admin/rooms/{room_id}?awaiting=sync"
    [job] = queue("sync", console).jobs
    assert (job.func_name, job.args) == ("jobs.sync.sync_room", (room_id,))
    with console.app_context():
        assert not redis().exists(f"roombridge:sync:full:{room_id}")
    # A full resync while the incremental one waits: not a second job, but the waiting one becomes full.
    _post(admin, f"/admin/rooms/{room_id}/sync", kind="full")
    assert len(queue("sync", console).jobs) == 1
    assert "already waiting; it will read the whole window again" in admin.get("/admin/").get_data(as_text=True)
    assert run_jobs(console, queues=("sync",)) == 1
    with console.app_context():
        state = db.session().get(RoomSyncState, room_id)
        assert state.last_full_sync_at is not None and state.sync_count == 1
    assert admin.get(f"/admin/rooms/{room_id}/status.json").json["sync"]["count"] == 1


def test_failed_jobs_show_their_reason_and_retry_requeues_them(app):
    from jobs.channels import renew_room_channel

    with app.app_context():
        room = make_room(db.session(), name="Atlas", calendar_id=ATLAS)
        db.session().commit()
        # No service account configured: the job fails for good (no retries asked for here).
        job = renew_room_channel.enqueue(room.id, ADMIN, retry=None)
    run_jobs(app, queues=("channels",))
    admin = _admin_client(app)
    page = admin.get("/admin/jobs").get_data(as_text=True)
    assert job.id in page and "jobs.channels.renew_room_channel(" in page
    assert "PermanentGoogleError: Google Calendar: notConfigured: GOOGLE_SERVICE_ACCOUNT_FILE is not set" in page
    assert re.search(r'<dd id="stat-failed"><a [^>]*>1<', admin.get("/admin/").get_data(as_text=True))

    response = _post(admin, f"/admin/jobs/channels/{job.id}/retry")
    assert response.status_code == 302
    assert queue("channels", app).job_ids == [job.id]
    assert FailedJobRegistry("channels", connection=redis(app)).count == 0
    assert "No failed jobs." in admin.get("/admin/jobs").get_data(as_text=True)
    again = _post(admin, f"/admin/jobs/channels/{job.id}/retry")
    assert "no longer among the failed jobs" in admin.get(again.headers["Location"]).get_data(as_text=True)


def test_setup_page_walks_through_google_and_checks_each_rooms_access(console, emulator):
    with console.app_context():
        session = db.session()
        make_room(session, name="Atlas", calendar_id=ATLAS)
        make_room(session, name="Borealis", calendar_id=BOREALIS)
        session.commit()
    admin = _admin_client(console)
    page = admin.get("/admin/setup").get_data(as_text=True)
    for step in ("Make changes to events", "outsiders can change calendars", "Domain-wide delegation",
                 "https://www.googleapis.com/auth/calendar.events", SERVICE_ACCOUNT):
        assert step in page
    response = _post(admin, "/admin/setup/check")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "1 of 2 rooms fully set up." in html
    borealis = re.search(r"<tr data-room-id=\"\d+\">\s*<th scope=\"row\"><a [^>]*>Borealis</a>.*?</tr>", html, re.S)
    assert "Missing" in borealis.group(0) and f"not shared with {SERVICE_ACCOUNT}" in borealis.group(0)
    index = admin.get("/admin/").get_data(as_text=True)
    assert '<dd id="stat-unhealthy">1</dd>' in index and "Needs attention" in index


def test_health_summary_counts_pushes_and_names_the_mode_and_scope(make_app):
    app = make_app(GOOGLE_DELEGATED_USER="booker@example.com")
    with app.app_context():
        room = make_room(db.session())
        take_pushes(WatchChannel(id="chan-1", room_id=room.id, token="t", address="a",
                                 expiration=utcnow() + timedelta(days=1)), [utcnow()] * 3)
    html = _admin_client(app).get("/admin/").get_data(as_text=True)
    assert '<dd id="stat-pushes">3</dd>' in html
    assert "Delegated mode: acting as booker@example.com" in html
    assert "https://www.googleapis.com/auth/calendar.events" in html


def _rooms_with_state(app, count: int) -> None:
    """Rooms with what the index shows per row: a live channel, a stopped one, a sync state, a conflict."""
    now = utcnow()
    with app.app_context():
        session = db.session()
        for _ in range(count):
            room = make_room(session)
            session.add_all([
                WatchChannel(id=f"live-{room.id}", room_id=room.id, token="t", address="a",
                             expiration=now + timedelta(days=5), created_at=now, last_push_at=now),
                WatchChannel(id=f"old-{room.id}", room_id=room.id, token="t", address="a",
                             expiration=now + timedelta(days=1), created_at=now, stopped_at=now),
                RoomSyncState(room_id=room.id, last_sync_at=now, sync_count=1, last_error="boom"),
            ])
            live = make_reservation(session, room, start=now + timedelta(days=1), source=ReservationSource.WEB)
            make_reservation(session, room, start=now + timedelta(days=1), source=ReservationSource.GOOGLE,
                             status=ReservationStatus.CONFLICT, conflict_with_id=live.id)
        session.commit()


def test_the_index_makes_a_fixed_number_of_queries(app):
    admin = _admin_client(app)
    _rooms_with_state(app, 2)
    with counting_statements(app) as small:
        html = admin.get("/admin/").get_data(as_text=True)
    assert html.count("<tr data-room-id=") == 2 and "boom" in html
    _rooms_with_state(app, 15)
    with counting_statements(app) as large:
        html = admin.get("/admin/").get_data(as_text=True)
    assert html.count("<tr data-room-id=") == 17
    assert len(large) == len(small)
    with app.app_context():
        assert db.session().scalar(sa.select(sa.func.count()).select_from(Reservation)) == 34


# --- a room leaving scope: its future reservations are cancelled or kept, as the admin says ---------


def _future_bookings(app, count=2):
    """`count` reservations of Atlas in the coming days, written to its calendar; their ids."""
    from datetime import UTC, datetime, time

    from roombridge import booking

    ids = []
    with app.app_context():
        room = db.session().scalar(sa.select(Room).where(Room.calendar_id == ATLAS))
        for days in range(2, 2 + count):
            start = datetime.combine(utcnow().date() + timedelta(days=days), time(10), UTC)
            ids.append(booking.book(db.session(), app.config["ROOMBRIDGE"], booking.BookingRequest(
                room_id=room.id, organiser_email="alice@example.com", title="Planning", start=start,
                end=start + timedelta(hours=1), attendees=["bob@example.com"])).reservations[0].id)
    run_jobs(app, queues=("write",))
    return ids


def _live_events(emulator):
    return [e["id"] for e in emulator.state.raw_events(ATLAS) if e.get("status") != "cancelled"]


def _statuses(app, ids):
    with app.app_context():
        return [db.session().get(Reservation, i).status for i in ids]


def test_rooms_remove_keeps_future_reservations_by_default_and_says_so(cli, emulator):
    invoke_ok(cli, ["rooms", "add", ATLAS, "--name", "Atlas"])
    ids = _future_bookings(cli.app)
    assert len(_live_events(emulator)) == 2
    removed = invoke_ok(cli, ["rooms", "remove", ATLAS]).output
    assert "kept 2 future reservation(s); their events stay on the room's calendar" in removed
    assert f"removed {ATLAS} from scope" in removed
    assert len(_live_events(emulator)) == 2
    assert _statuses(cli.app, ids) == [ReservationStatus.CONFIRMED] * 2


def test_rooms_remove_cancel_future_deletes_the_events_before_the_room_leaves_scope(cli, emulator):
    invoke_ok(cli, ["rooms", "add", ATLAS, "--name", "Atlas"])
    ids = _future_bookings(cli.app)
    [first_event, _] = _live_events(emulator)
    # Google refuses one deletion for good: the room stays in scope, and saying it again finishes the job.
    emulator.state.add_fault(403, times=1, method="DELETE", calendar=ATLAS)
    refused = cli.invoke(args=["rooms", "remove", ATLAS, "--cancel-future"])
    assert refused.exit_code != 0 and "stays in scope: 1 event(s) could not be deleted" in refused.output
    with cli.app.app_context():
        assert db.session().scalar(sa.select(Room.in_scope).where(Room.calendar_id == ATLAS)) is True
    assert len(_live_events(emulator)) == 1

    removed = invoke_ok(cli, ["rooms", "remove", ATLAS, "--cancel-future"]).output
    assert "cancelled 1 future reservation(s) and deleted their events" in removed
    assert f"removed {ATLAS} from scope" in removed
    assert _live_events(emulator) == []
    assert _statuses(cli.app, ids) == [ReservationStatus.CANCELLED] * 2
    with cli.app.app_context():
        assert db.session().scalar(sa.select(Room.in_scope).where(Room.calendar_id == ATLAS)) is False
        mails = [job.args[0] for job in queue("default").jobs if job.func_name.endswith(".send_invitations")]
        # Room mode: the mail job of each runs after its write, and again after its event went (the CANCEL).
        assert sorted(mails) == sorted(ids * 2)


def test_the_remove_page_asks_what_to_do_with_future_reservations(console, emulator):
    room_id, _ = _add_atlas(console)
    ids = _future_bookings(console)
    admin = _admin_client(console)
    page = admin.get(f"/admin/rooms/{room_id}/remove").get_data(as_text=True)
    assert "It has 2 future reservations made here" in page
    assert 'value="cancel"' in page and 'value="keep"' in page
    assert _post(admin, f"/admin/rooms/{room_id}/remove").status_code == 422  # no answer: nothing done
    assert len(_live_events(emulator)) == 2
    response = _post(admin, f"/admin/rooms/{room_id}/remove", future="cancel")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    assert _live_events(emulator) == []
    assert _statuses(console, ids) == [ReservationStatus.CANCELLED] * 2
    assert "2 future reservation(s) cancelled and their events deleted" in html_lib.unescape(
        admin.get("/admin/").get_data(as_text=True))

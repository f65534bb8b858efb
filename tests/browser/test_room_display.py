"""The room display in real Chromium, portrait and landscape: check in, end early, book now, and losing the server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from jobs.reservations import write_reservation
from roombridge import db, displays
from roombridge.models import Reservation, ReservationSource, ReservationStatus, Room
from roombridge.unit_of_work import unit_of_work
from tests.factories import make_reservation
from tests.support import assert_accessible, screenshot, wait_until

ATLAS = "room-atlas@resource.calendar.google.com"


def _door(stack) -> tuple[str, int]:
    """Atlas needs a check-in and is bookable all day; a meeting began five minutes ago; a display link."""
    app = stack.app
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    with app.app_context():
        session = db.session()
        with unit_of_work(session):
            room = session.get(Room, stack.rooms["Atlas"])
            room.checkin_required, room.bookable_hours = True, "00:00-24:00"
            rid = make_reservation(session, room, start, 30, title="Design review", organiser_email="alice@example.com",
                                   status=ReservationStatus.PENDING, source=ReservationSource.WEB).id
        write_reservation(rid)  # on the room's Google calendar, as a booking made here would be
        token = displays.create(session, ATLAS, actor="admin@example.com").token
    return f"{stack.url}/display/{token}", rid


def _live_events(stack) -> list[dict]:
    return [e for e in stack.emulator.state.raw_events(ATLAS) if e.get("status") != "cancelled"]


def _fits_without_scrolling(page) -> bool:
    return page.evaluate("""() => document.documentElement.scrollHeight <= window.innerHeight
                                 && document.documentElement.scrollWidth <= window.innerWidth""")


@pytest.mark.parametrize("width, height", [(800, 1280), (1280, 800)], ids=["portrait", "landscape"])
def test_check_in_end_early_and_book_now_at_the_door(stack, browser, width, height):
    url, rid = _door(stack)
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
    context.set_default_timeout(10_000)
    page = context.new_page()
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    name = f"display-{width}x{height}"
    try:
        page.goto(url)
        expect(page.get_by_role("heading", name="Atlas")).to_be_visible()
        expect(page.locator(".state-word")).to_have_text("Busy")
        expect(page.locator(".now .title")).to_contain_text("Design review")
        assert _fits_without_scrolling(page)
        screenshot(page, f"{name}-busy", full_page=False)
        assert_accessible(page)

        page.get_by_role("button", name="Check in").click()
        expect(page.get_by_role("button", name="Check in")).to_have_count(0)
        with stack.app.app_context():
            assert db.session().get(Reservation, rid).checked_in_by == "display"

        page.get_by_role("button", name="End early").click()
        expect(page.locator(".state-word")).to_have_text("Free")
        wait_until(lambda: _live_events(stack) and _live_events(stack)[0]["end"]["dateTime"] !=
                   _live_events(stack)[0]["start"]["dateTime"] and
                   datetime.fromisoformat(_live_events(stack)[0]["end"]["dateTime"]) <= datetime.now(UTC),
                   timeout=20, what="Google to hold the early end")
        assert _fits_without_scrolling(page)
        screenshot(page, f"{name}-free", full_page=False)
        assert_accessible(page)

        page.get_by_role("button", name="30 min").click()
        expect(page.locator(".state-word")).to_have_text("Busy")
        expect(page.locator(".now .title")).to_contain_text("Walk-up booking")
        wait_until(lambda: "Walk-up booking" in [e["summary"] for e in _live_events(stack)], timeout=20,
                   what="the walk-up booking in Google")
        assert _fits_without_scrolling(page)
        screenshot(page, f"{name}-walk-up", full_page=False)
        assert_accessible(page)
    finally:
        context.close()
    assert not refused, refused


def test_the_display_says_when_it_has_lost_the_server_and_recovers(stack, page):
    url, _ = _door(stack)
    page.clock.install()
    page.goto(url)
    offline = page.locator("#offline")
    expect(offline).to_be_hidden()

    page.route("**/state.json", lambda route: route.abort())  # the server is gone (a restart, the network)
    page.clock.run_for(25_000)
    expect(offline).to_be_visible()
    expect(offline).to_have_text("Connection to the server lost. Retrying…")
    assert_accessible(page)

    page.unroute("**/state.json")  # back: the next poll answers 304 and the notice goes
    page.clock.run_for(65_000)
    expect(offline).to_be_hidden()
    expect(page.locator(".state-word")).to_have_text("Busy")


def test_a_meeting_booked_in_google_ends_early_at_the_door_by_the_room_declining_the_rest(stack, page):
    from jobs.sync import sync_room
    from tests.sync_support import rfc

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    made = stack.emulator.state.book("alice@example.com", ATLAS, "Board call", rfc(start),
                                     rfc(start + timedelta(minutes=30)))
    with stack.app.app_context():
        sync_room(stack.rooms["Atlas"])
        token = displays.create(db.session(), ATLAS, actor="admin@example.com").token
    page.goto(f"{stack.url}/display/{token}")
    expect(page.locator(".now .title")).to_contain_text("Board call")
    assert_accessible(page)

    page.get_by_role("button", name="End early").click()
    expect(page.locator(".state-word")).to_have_text("Free")

    def room_answer() -> str:
        copy = stack.emulator.state.person_event("alice@example.com", made["id"])
        return next(a["responseStatus"] for a in copy["attendees"] if a["email"] == ATLAS)

    wait_until(lambda: room_answer() == "declined", timeout=20, what="the room to decline the rest in Google")
    assert stack.emulator.state.person_event("alice@example.com", made["id"])["end"] == made["end"]  # theirs
    assert_accessible(page)

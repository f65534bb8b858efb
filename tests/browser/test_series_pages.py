"""A series in real Chromium: book weekly x3, edit one occurrence, then all; Google holds ONE recurring event."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from playwright.sync_api import expect

from roombridge import db
from roombridge.models import Reservation
from tests.support import assert_accessible, screenshot, sign_in_browser, wait_until

DAY = (date.today() + timedelta(days=3)).isoformat()
ATLAS = "room-atlas@resource.calendar.google.com"


def _events(stack):
    return [e for e in stack.emulator.state.raw_events(ATLAS) if e.get("status") != "cancelled"]


def _occurrences(stack) -> list[tuple[int, str, str]]:
    with stack.app.app_context():
        session = db.session()
        rows = session.scalars(sa.select(Reservation).where(Reservation.series_id.is_not(None))
                               .order_by(Reservation.start_at)).all()
        found = [(r.id, r.title, str(r.status)) for r in rows]
        session.rollback()
        return found


def test_edit_one_occurrence_then_all_occurrences_of_a_series(stack, page):
    sign_in_browser(page, stack, "alice@example.com")
    page.goto(f"{stack.url}/book?room_id={stack.rooms['Atlas']}&date={DAY}&start=09:00&end=09:30")
    page.locator("#title").fill("Stand-up")
    page.get_by_label("Every week").check()
    page.get_by_label("Number of occurrences").fill("3")
    page.get_by_role("button", name="Book", exact=True).click()
    expect(page.get_by_role("heading", name="Stand-up")).to_be_visible()
    expect(page.locator("#repeats")).to_contain_text("Every week on")
    expect(page.locator("#repeats")).to_contain_text("3 times")
    assert_accessible(page)
    wait_until(lambda: [s for _, _, s in _occurrences(stack)] == ["confirmed"] * 3, timeout=20)
    [series] = _events(stack)
    assert series["recurrence"][0].startswith("RRULE:FREQ=WEEKLY") and "COUNT=3" in series["recurrence"][0]
    ids = [i for i, _, _ in _occurrences(stack)]

    # One occurrence: the edit form offers the scope; "this occurrence" is an exception of its instance.
    page.goto(f"{stack.url}/reservations/{ids[1]}/edit")
    expect(page.get_by_role("group", name="This is one occurrence of a series. Apply to")).to_be_visible()
    screenshot(page, "series-edit-scope")
    assert_accessible(page)
    page.locator("#title").fill("Stand-up (demo day)")
    page.get_by_label("This occurrence").check()
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Changes saved.")).to_be_visible()
    wait_until(lambda: [(t, s) for _, t, s in _occurrences(stack)] == [
        ("Stand-up", "confirmed"), ("Stand-up (demo day)", "confirmed"), ("Stand-up", "confirmed")], timeout=20)
    events = _events(stack)
    assert [e["id"] for e in events if e.get("recurrence")] == [series["id"]]
    [exception] = [e for e in events if e.get("recurringEventId") == series["id"]]
    assert exception["summary"] == "Stand-up (demo day)"

    # All occurrences: the recurring event itself changes; still one event.
    page.goto(f"{stack.url}/reservations/{ids[0]}/edit")
    page.locator("#title").fill("Daily sync")
    page.get_by_label("All occurrences").check()
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Changes saved.")).to_be_visible()
    wait_until(lambda: [(t, s) for _, t, s in _occurrences(stack)] == [("Daily sync", "confirmed")] * 3, timeout=20)
    wait_until(lambda: [e["summary"] for e in _events(stack) if e.get("recurrence")] == ["Daily sync"], timeout=20)

    # Cancel page offers the scope too.
    page.goto(f"{stack.url}/reservations/{ids[2]}/cancel")
    expect(page.get_by_label("This and following occurrences")).to_be_visible()
    assert_accessible(page)

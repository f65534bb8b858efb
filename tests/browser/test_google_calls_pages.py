"""The Google call log in real Chromium, checked with axe: the summary with its least-privilege line, a room's calls."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from roombridge import call_log, db
from roombridge.gcal import CalendarGateway, CalendarNotInScope
from roombridge.models import Room
from roombridge.queue import redis
from tests.support import assert_accessible, screenshot, sign_in_browser


def test_summary_shows_a_refusal_prominently_and_leads_to_the_room_calls(stack, page):
    with stack.app.app_context():
        atlas = db.session().get(Room, stack.rooms["Atlas"])
        gateway = CalendarGateway.for_app(kind="sync")
        for _ in gateway.list_events(atlas.calendar_id).pages():  # a real call, over HTTP to the emulator
            pass
        try:
            gateway.list_events("someone@example.com")
        except CalendarNotInScope:
            pass
        call_log.flush(db.session(), redis())  # what the scheduler's job does every tick

    sign_in_browser(page, stack, "admin@example.com", next_path="/admin/google-calls")
    expect(page.get_by_role("heading", name="Google calls", exact=True)).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("1 call(s) in this window named a calendar")
    expect(page.locator("#scope")).to_have_text("https://www.googleapis.com/auth/calendar.events")
    expect(page.locator("#calendars-in-scope")).to_have_text(str(len(stack.rooms)))
    expect(page.locator("#refused-calendars")).to_contain_text("someone@example.com: 1")
    expect(page.locator("#privilege-line")).to_contain_text("cannot")
    screenshot(page, "google-calls-summary")
    assert_accessible(page)

    page.get_by_role("link", name="Atlas").click()
    expect(page.get_by_role("heading", name=re.compile("^Google calls: Atlas"))).to_be_visible()
    expect(page.locator("#calls tbody tr")).to_have_count(1)
    expect(page.locator("#calls tbody")).to_contain_text("events.list")
    page.get_by_label("Kind").select_option("write")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#no-calls")).to_have_text("No calls match these filters.")
    screenshot(page, "google-calls-room")
    assert_accessible(page)

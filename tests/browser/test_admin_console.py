"""The admin console in real Chromium: add a room, see its channel, renew it, resync it; others are refused."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from emulator import DEMO_SERVICE_ACCOUNT
from tests.support import assert_accessible, screenshot, sign_in_browser

NOVA = "room-nova@resource.calendar.google.com"
UNSHARED = "room-vault@resource.calendar.google.com"
EXPIRY = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 6 days 23 hours\)")


def test_admin_adds_a_room_renews_its_channel_and_resyncs_it(stack, page):
    stack.emulator.state.add_calendar(NOVA, "Nova", kind="room")
    stack.emulator.state.share(NOVA, DEMO_SERVICE_ACCOUNT, "writer")
    stack.emulator.state.add_calendar(UNSHARED, "Vault", kind="room")

    sign_in_browser(page, stack, "admin@example.com", next_path="/admin/")
    expect(page.get_by_role("heading", name="Admin console")).to_be_visible()
    expect(page.locator("#stat-scope")).to_contain_text("https://www.googleapis.com/auth/calendar.events")
    expect(page.locator("#stat-mode")).to_contain_text("Room mode")
    screenshot(page, "admin-overview")
    assert_accessible(page)

    # A calendar nobody shared with the service account is refused, the reason by its field.
    page.get_by_role("link", name="Add a room").first.click()
    page.get_by_label("Room calendar address").fill(UNSHARED)
    page.get_by_label("Name").fill("Vault")
    page.get_by_role("button", name="Check with Google and add").click()
    expect(page.locator("#calendar_id-error")).to_contain_text(f"not shared with {DEMO_SERVICE_ACCOUNT}")
    expect(page.locator("#calendar_id")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#error-summary")).to_be_focused()
    screenshot(page, "admin-add-refused")
    assert_accessible(page)

    # A shared one is added, with its channel open at once.
    page.get_by_label("Room calendar address").fill(NOVA)
    page.get_by_label("Name").fill("Nova")
    page.get_by_label("Capacity (people)").fill("6")
    page.get_by_role("button", name="Check with Google and add").click()
    expect(page.get_by_role("heading", name=re.compile("^Nova"))).to_be_visible()
    expect(page.get_by_text("Nova added: Google grants the service account 'writer' access.")).to_be_visible()
    [google] = [c for c in stack.emulator.state.channels_info() if c["calendar"] == NOVA]
    expect(page.locator("#channel-id")).to_have_text(google["id"])
    expect(page.locator("#channel-expiry")).to_have_text(EXPIRY)
    screenshot(page, "admin-room")
    assert_accessible(page)

    # Renew: the worker replaces the channel and the page shows the new one by itself.
    page.get_by_role("button", name="Renew channel").click()
    expect(page.get_by_text("Channel renewal requested")).to_be_visible()
    expect(page.locator("#room-pending")).to_have_text("New channel open.", timeout=20_000)
    expect(page.locator("#channel-id")).not_to_have_text(google["id"])
    renewed = page.locator("#channel-id").inner_text()
    nova = {c["id"]: c["stopped"] for c in stack.emulator.state.channels_info() if c["calendar"] == NOVA}
    assert nova == {google["id"]: True, renewed: False}
    expect(page.locator("#channel-expiry")).to_have_text(EXPIRY)

    # Resync: the first full sync already ran; a full resync updates the last sync.
    expect(page.locator("#last-sync")).not_to_have_text("never", timeout=20_000)
    page.reload()
    syncs = int(page.locator("#sync-count").inner_text())
    page.get_by_role("button", name="Full resync").click()
    expect(page.get_by_text("Full resync requested.")).to_be_visible()
    expect(page.locator("#room-pending")).to_have_text("Sync done.", timeout=20_000)
    expect(page.locator("#sync-count")).to_have_text(str(syncs + 1))
    expect(page.locator("#last-full-sync")).to_contain_text("under a minute ago")
    expect(page.locator("#sync-error")).to_have_text("none")
    screenshot(page, "admin-room-resynced")
    assert_accessible(page)

    page.get_by_role("link", name="Overview").click()
    row = page.locator("tr", has=page.get_by_role("link", name="Nova"))
    expect(row).to_contain_text(EXPIRY)
    for name, heading in (("Failed jobs", "Failed jobs"), ("Google set-up", "Setting up Google")):
        page.get_by_role("navigation", name="Admin").get_by_role("link", name=name).click()
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        screenshot(page, f"admin-{name.lower().replace(' ', '-')}")
        assert_accessible(page)
    page.get_by_role("button", name="Check access").click()
    expect(page.locator("#check-results")).to_contain_text("rooms fully set up")
    expect(page.locator("#check-results tr", has_text="Nova")).to_contain_text("Works")
    screenshot(page, "admin-setup-checked")
    assert_accessible(page)


def test_a_non_admin_is_refused(stack, page):
    sign_in_browser(page, stack, "alice@example.com")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    response = page.goto(f"{stack.url}/admin/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="Admins only")).to_be_visible()
    screenshot(page, "admin-refused")

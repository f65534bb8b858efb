"""Insights and the lobby overview in real Chromium, checked with axe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

from emulator.demo import DEMO_TIME_ZONE
from roombridge import db
from roombridge.models import Reservation, ReservationSource, ReservationStatus
from scripts.devstack import seed_history
from tests.support import assert_accessible, screenshot, sign_in_browser


def _book_now(stack, room: str, minutes: int) -> str:
    """A booking of `room` under way now, straight in the database; its end as the page shows it."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    with stack.app.app_context():
        session = db.session()
        session.add(Reservation(room_id=stack.rooms[room], organiser_email="bob@example.com", title="Secret plan",
                                start_at=start, end_at=start + timedelta(minutes=minutes),
                                source=ReservationSource.WEB, status=ReservationStatus.CONFIRMED))
        session.commit()
    return (start + timedelta(minutes=minutes)).astimezone(ZoneInfo(DEMO_TIME_ZONE)).strftime("%H:%M")


def test_insights_page_draws_its_charts_and_filters(stack, page):
    with stack.app.app_context():
        session = db.session()
        seed_history(session, datetime.now(UTC).date())
        session.commit()
    sign_in_browser(page, stack, "admin@example.com", next_path="/admin/insights")
    expect(page.get_by_role("heading", name="Insights", exact=True)).to_be_visible()
    expect(page.get_by_role("img", name="Hours in the range")).to_be_visible()
    expect(page.get_by_role("img", name="Bookings by where they were made")).to_be_visible()
    expect(page.locator("#heatmap")).to_be_visible()
    expect(page.locator("#oversized")).to_contain_text("Draco: seats 20")
    assert page.locator("#room-figures tbody tr").count() == 5
    screenshot(page, "insights")
    assert_accessible(page)

    page.get_by_label("Building").select_option("Annex")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#room-figures tbody tr")).to_have_count(1)
    expect(page.locator("#room-figures tbody")).to_contain_text("Eridanus")
    assert "building=Annex" in page.locator("#csv-link").get_attribute("href")
    with page.expect_download() as download:
        page.locator("#csv-link").click()
    assert download.value.suggested_filename.startswith("roombridge-insights-")
    assert_accessible(page)


def test_lobby_overview_shows_free_and_busy_and_follows_changes(stack, page):
    atlas_until = _book_now(stack, "Atlas", 65)
    page.clock.install()
    sign_in_browser(page, stack, "alice@example.com", next_path="/lobby?building=HQ")
    atlas = page.locator(f"[data-room-id='{stack.rooms['Atlas']}']")
    borealis = page.locator(f"[data-room-id='{stack.rooms['Borealis']}']")
    expect(atlas).to_contain_text(f"Busy until {atlas_until}")
    expect(borealis).to_contain_text("Free")
    expect(page.locator("#lobby-rooms")).not_to_contain_text("Eridanus")  # another building
    expect(page.locator("#lobby-rooms")).not_to_contain_text("Secret plan")  # never a title
    assert_accessible(page)
    screenshot(page, "lobby")

    borealis_until = _book_now(stack, "Borealis", 35)
    page.clock.fast_forward(31_000)  # past the next poll (every 30 s)
    expect(borealis).to_contain_text(f"Busy until {borealis_until}")
    expect(page.locator("#connection")).to_have_text("")
    page.clock.fast_forward(31_000)  # nothing changed: the poll gets a 304 and keeps what it shows
    expect(borealis).to_contain_text(f"Busy until {borealis_until}")
    expect(page.locator("#connection")).to_have_text("")


def test_a_lobby_screen_opens_its_building_by_its_link_without_sign_in(stack, page):
    from roombridge import displays

    atlas_until = _book_now(stack, "Atlas", 65)
    with stack.app.app_context():
        token = displays.create_lobby(db.session(), "HQ", actor="admin@example.com").token
    page.clock.install()
    page.goto(f"{stack.url}/display/lobby/{token}")  # no sign-in
    expect(page.get_by_role("heading", name="HQ: rooms now")).to_be_visible()
    expect(page.locator(f"[data-room-id='{stack.rooms['Atlas']}']")).to_contain_text(f"Busy until {atlas_until}")
    expect(page.locator("#lobby-rooms")).not_to_contain_text("Eridanus")  # another building
    expect(page.get_by_role("navigation", name="Buildings")).to_have_count(0)  # no way to another building
    assert_accessible(page)

    borealis = page.locator(f"[data-room-id='{stack.rooms['Borealis']}']")
    borealis_until = _book_now(stack, "Borealis", 35)
    page.clock.fast_forward(31_000)  # the screen polls its own link's status
    expect(borealis).to_contain_text(f"Busy until {borealis_until}")

    with stack.app.app_context():
        displays.revoke_lobby(db.session(), "HQ", actor="admin@example.com")
    page.clock.fast_forward(31_000)  # revoked: the poll gets 404 and the screen says it lost the server
    expect(page.locator("#connection")).to_contain_text("Cannot reach the server")


def test_an_admin_makes_a_lobby_link_with_its_qr_code(stack, page):
    sign_in_browser(page, stack, "admin@example.com", next_path="/admin/lobbies")
    expect(page.get_by_role("heading", name="Lobby screens")).to_be_visible()
    assert_accessible(page)
    page.get_by_label("Building").select_option("Annex")
    page.get_by_role("button", name="Create a lobby link").click()
    expect(page.get_by_role("img", name="QR code of the display link")).to_be_visible()
    url = page.get_by_label("Display link").input_value()
    assert "/display/lobby/lb_" in url
    assert_accessible(page)
    page.get_by_role("link", name="Back to Lobby screens").click()
    expect(page.locator("main")).to_contain_text("Annex: link lb_")
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("main")).to_contain_text("No lobby link yet.")

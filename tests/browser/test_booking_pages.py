"""An employee's day in real Chromium: sign in with Google (the emulator), find, book, edit, cancel."""

from __future__ import annotations

from datetime import date, timedelta

from playwright.sync_api import expect

from tests.support import assert_accessible, screenshot, sign_in_browser, wait_until

DAY = (date.today() + timedelta(days=3)).isoformat()
ATLAS = "room-atlas@resource.calendar.google.com"


def _room_events(stack, calendar_id=ATLAS):
    return [e for e in stack.emulator.state.raw_events(calendar_id) if e.get("status") != "cancelled"]


def test_find_book_edit_and_cancel_a_room(stack, page):
    sign_in_browser(page, stack, "alice@example.com")
    expect(page.get_by_role("heading", name="Find a room")).to_be_visible()
    expect(page.get_by_text("Alice Archer")).to_be_visible()

    # Find: five people, 10:00-11:00 in three days.
    page.get_by_label("Date").fill(DAY)
    page.get_by_label("From").fill("10:00")
    page.get_by_label("To").fill("11:00")
    page.get_by_label("People").fill("5")
    page.get_by_role("button", name="Show rooms").click()
    expect(page.get_by_role("heading", name="3 of 3 rooms free", exact=False)).to_be_visible()
    screenshot(page, "room-finder")
    assert_accessible(page)

    # Book Atlas from the finder; the form comes filled in with room and times.
    page.get_by_role("link", name="Book Atlas").click()
    expect(page.locator("#room_id")).to_have_value(str(stack.rooms["Atlas"]))
    expect(page.locator("#start")).to_have_value("10:00")
    page.locator("#title").fill("Design review")
    page.get_by_label("Attendees").fill("bob@example.com")
    screenshot(page, "booking-form")
    assert_accessible(page)
    page.get_by_role("button", name="Book", exact=True).click()

    # The reservation page updates by itself once the worker has written the event to Google.
    expect(page.get_by_role("heading", name="Design review")).to_be_visible()
    expect(page.locator("#status-label")).to_have_text("Confirmed", timeout=20_000)
    screenshot(page, "reservation-confirmed")
    assert_accessible(page)
    events = _room_events(stack)
    assert [e["summary"] for e in events] == ["Design review"]

    # Edit: a longer meeting; Google follows.
    page.get_by_role("link", name="Edit").click()
    page.locator("#end").fill("11:30")
    page.locator("#title").fill("Design review (long)")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Changes saved.")).to_be_visible()
    expect(page.locator("#status-label")).to_have_text("Confirmed", timeout=20_000)
    wait_until(lambda: [e["summary"] for e in _room_events(stack)] == ["Design review (long)"])
    assert _room_events(stack)[0]["end"]["dateTime"].startswith(f"{DAY}T11:30")

    # A clash and a bad input, each message by its field, the typed values kept.
    page.goto(f"{stack.url}/book?room_id={stack.rooms['Atlas']}&date={DAY}&start=11:00&end=12:00")
    page.locator("#title").fill("Overlapping")
    page.get_by_role("button", name="Book", exact=True).click()
    expect(page.locator("#start-error")).to_contain_text("already booked")
    expect(page.locator("#start")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#title")).to_have_value("Overlapping")
    page.locator("#title").fill("")
    page.locator("#start").fill("15:00")
    page.locator("#end").fill("14:00")
    page.get_by_role("button", name="Book", exact=True).click()
    expect(page.locator("#end-error")).to_contain_text("The end must be after the start.")
    expect(page.locator("#title-error")).to_contain_text("Enter a title.")
    expect(page.locator("#end")).to_have_value("14:00")
    screenshot(page, "booking-form-errors")
    assert_accessible(page)

    # My reservations, then cancel with confirmation; the Google event goes too.
    page.get_by_role("link", name="My reservations").click()
    expect(page.get_by_role("link", name="Design review (long)", exact=True)).to_be_visible()
    screenshot(page, "my-reservations")
    assert_accessible(page)
    page.get_by_role("link", name="Cancel Design review (long)").click()
    expect(page.get_by_role("heading", name="Cancel this reservation?")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(page.get_by_text("Reservation cancelled.")).to_be_visible()
    expect(page.get_by_role("link", name="Design review (long)", exact=True)).to_have_count(0)
    wait_until(lambda: _room_events(stack) == [])


def test_every_page_is_accessible_and_works_by_keyboard_on_a_phone(stack, browser):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        sign_in_browser(page, stack, "admin@example.com")
        expect(page.get_by_role("link", name="Admin")).to_be_visible()
        assert_accessible(page)
        screenshot(page, "phone-room-finder")

        # Keyboard: the skip link is the first stop and takes focus to the content.
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()

        page.goto(f"{stack.url}/rooms/{stack.rooms['Draco']}?date={DAY}")
        expect(page.get_by_role("heading", name="Draco")).to_be_visible()
        assert_accessible(page)
        screenshot(page, "phone-room-day")

        page.goto(f"{stack.url}/book")
        assert_accessible(page)
        page.goto(f"{stack.url}/reservations")
        assert_accessible(page)
        screenshot(page, "phone-my-reservations")
        page.goto(f"{stack.url}/tokens")
        page.get_by_role("button", name="Make a token").click()
        expect(page.get_by_role("heading", name="Your new token")).to_be_visible()
        assert_accessible(page)
        screenshot(page, "phone-api-tokens")
        page.goto(f"{stack.url}/admin/tokens")
        expect(page.get_by_role("button", name="Revoke")).to_be_visible()
        assert_accessible(page)
        page.goto(f"{stack.url}/admin/rooms/{stack.rooms['Draco']}/remove")
        assert_accessible(page)

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        assert_accessible(page)
        screenshot(page, "signed-out")
        page.goto(f"{stack.url}/reservations")
        # Signed out, the app sends the browser back to the provider.
        page.wait_for_url(f"{stack.emulator.url}/o/oauth2/v2/auth*")
    finally:
        context.close()


def test_a_booking_made_in_google_shows_up_for_everyone(stack, page):
    """Bob books Atlas in Google Calendar; the push reaches the app, the worker syncs, and the
    pages show it: busy in Alice's finder, and in Bob's own reservations with a Google badge."""
    import sqlalchemy as sa

    from roombridge import channels, db
    from roombridge.gcal import CalendarGateway
    from roombridge.models import Reservation, ReservationSource, Room

    with stack.app.app_context():
        session = db.session()
        atlas = session.get(Room, stack.rooms["Atlas"])
        channels.create_channel(session, CalendarGateway.for_app(kind="renewal"), atlas, stack.app.config["ROOMBRIDGE"],
                                db.utcnow())
    stack.emulator.state.book("bob@example.com", ATLAS, "Budget call", f"{DAY}T14:00:00+00:00",
                              f"{DAY}T15:00:00+00:00")

    def mirrored():
        with stack.app.app_context():
            return db.session().scalar(sa.select(Reservation).where(Reservation.source == ReservationSource.GOOGLE))

    booked = wait_until(mirrored, timeout=20)
    assert (booked.organiser_email, booked.title) == ("bob@example.com", "Budget call")

    sign_in_browser(page, stack, "alice@example.com")
    page.get_by_label("Date").fill(DAY)
    page.get_by_label("From").fill("14:00")
    page.get_by_label("To").fill("14:30")
    page.get_by_role("button", name="Show rooms").click()
    expect(page.get_by_role("heading", name="4 of 5 rooms free", exact=False)).to_be_visible()
    expect(page.get_by_role("listitem", name="14:00–15:00 busy: Budget call")).to_be_visible()
    screenshot(page, "room-finder-google-booking")

    page.get_by_role("button", name="Sign out").click()
    sign_in_browser(page, stack, "bob@example.com", next_path="/reservations")
    expect(page.get_by_role("link", name="Budget call", exact=True)).to_be_visible()
    expect(page.get_by_text("Google", exact=True)).to_be_visible()
    assert_accessible(page)

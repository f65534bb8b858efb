"""The finder's grid, free now, autocomplete and My reservations on a phone, in real Chromium with axe."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

from roombridge import db, people
from roombridge.models import ReservationSource, ReservationStatus, Room
from tests.factories import make_reservation
from tests.support import assert_accessible, screenshot, sign_in_browser, zone_at_midday

DAY = date.today() + timedelta(days=3)

# Every visible element's box, against the viewport's width: what a person cannot reach without scrolling sideways.
OUTSIDE_VIEWPORT = """() => {
  const width = document.documentElement.clientWidth;
  const outside = [];
  for (const el of document.querySelectorAll('body *')) {
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden') continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.left < -0.5 || box.right > width + 0.5) {
      outside.push(`${el.tagName}.${el.className} ${Math.round(box.left)}..${Math.round(box.right)} `
                   + el.textContent.trim().slice(0, 40));
    }
  }
  return {width, scrollWidth: document.documentElement.scrollWidth, outside};
}"""


def test_book_from_a_free_gap_in_the_grid_by_keyboard(stack, page):
    sign_in_browser(page, stack, "alice@example.com", next_path=f"/grid?date={DAY.isoformat()}")
    expect(page.get_by_role("heading", name="Room grid")).to_be_visible()
    table = page.get_by_role("table")
    expect(table.get_by_role("columnheader", name="10:00")).to_be_visible()
    expect(table.get_by_role("rowheader", name="Atlas")).to_be_visible()
    screenshot(page, "room-grid")
    assert_accessible(page)

    gap = table.get_by_role("link", name="Book Atlas 10:00–11:00")
    gap.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#room_id")).to_have_value(str(stack.rooms["Atlas"]))
    expect(page.locator("#date")).to_have_value(DAY.isoformat())
    expect(page.locator("#start")).to_have_value("10:00")
    expect(page.locator("#end")).to_have_value("11:00")
    page.locator("#title").fill("Grid booking")
    page.get_by_role("button", name="Book", exact=True).click()
    expect(page.locator("#status-label")).to_have_text("Confirmed", timeout=20_000)

    page.goto(f"{stack.url}/grid?date={DAY.isoformat()}")
    atlas = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Atlas"))
    expect(atlas.get_by_text("Busy: Grid booking")).to_be_visible()
    expect(atlas.get_by_role("link", name="Book Atlas 10:00–11:00")).to_have_count(0)
    expect(atlas.get_by_role("link", name="Book Atlas 11:00–12:00")).to_have_count(1)

    # The week of one room: days as rows, the booking in its day.
    atlas.get_by_role("link", name="Atlas", exact=True).click()
    expect(page.get_by_role("heading", name="Atlas: week of", exact=False)).to_be_visible()
    day_row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=f"{DAY:%a %d %b}"))
    expect(day_row.get_by_text("Busy: Grid booking")).to_be_visible()
    screenshot(page, "room-week")
    assert_accessible(page)


def test_free_now_books_in_one_more_click(stack, page):
    with stack.app.app_context():
        session = db.session()
        session.get(Room, stack.rooms["Atlas"]).time_zone = zone_at_midday()  # now is midday for Atlas
        session.commit()
    sign_in_browser(page, stack, "alice@example.com")
    page.get_by_role("button", name="Free now").click()
    expect(page.get_by_role("heading", name="free for 30 minutes from now", exact=False)).to_be_visible()
    screenshot(page, "free-now")
    assert_accessible(page)
    page.get_by_role("link", name="For 60 minutes").click()
    expect(page.get_by_role("heading", name="free for 60 minutes from now", exact=False)).to_be_visible()
    page.get_by_role("button", name="Book Atlas now").click()
    expect(page.get_by_role("heading", name="Quick meeting")).to_be_visible()
    expect(page.locator("#status-label")).to_have_text("Confirmed", timeout=20_000)
    events = [e for e in stack.emulator.state.raw_events("room-atlas@resource.calendar.google.com")
              if e.get("status") != "cancelled"]
    assert [e["summary"] for e in events] == ["Quick meeting"]


def test_attendee_autocomplete_suggests_people_already_here(stack, page):
    with stack.app.app_context():
        people.remember(db.session(), "bob@example.com", "Bob Baker")
    sign_in_browser(page, stack, "alice@example.com", next_path="/book")
    search = page.get_by_label("Add an attendee")
    expect(search).to_be_visible()  # shown by attendees.js
    search.press_sequentially("bo")
    expect(page.locator('#attendee-suggestions option[value="bob@example.com"]')).to_have_count(1)
    expect(page.locator("#attendee-announce")).to_have_text("1 suggestion")
    search.fill("bob@example.com")
    search.press("Enter")
    expect(page.get_by_label("Attendees")).to_have_value("bob@example.com")
    expect(page.locator("#attendee-announce")).to_have_text("bob@example.com added to the attendees.")
    expect(search).to_be_focused()
    assert_accessible(page)


def test_my_reservations_fit_a_390_px_phone(stack, browser):
    zone = ZoneInfo("Europe/London")
    with stack.app.app_context():
        session = db.session()
        atlas, cygnus = session.get(Room, stack.rooms["Atlas"]), session.get(Room, stack.rooms["Cygnus"])
        zone = atlas.zone
        for week in range(3):
            start = datetime.combine(DAY + timedelta(days=7 * week), time(9), zone).astimezone(UTC)
            make_reservation(session, atlas, start=start, title="Weekly planning with the whole product team",
                             series_id="weekly-1", source=ReservationSource.WEB, status=ReservationStatus.CONFIRMED)
        make_reservation(session, cygnus, start=datetime.combine(DAY, time(14), zone).astimezone(UTC),
                         title="A rather long title: quarterly budget review and forecast for next year",
                         source=ReservationSource.WEB, status=ReservationStatus.CONFIRMED,
                         attendees=["bob@example.com"])
        make_reservation(session, cygnus, start=datetime.combine(DAY, time(16), zone).astimezone(UTC),
                         title="Invited", organiser_email="bob@example.com", attendees=["alice@example.com"],
                         status=ReservationStatus.CONFIRMED)
        session.commit()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        sign_in_browser(page, stack, "alice@example.com", next_path="/reservations")
        expect(page.get_by_role("heading", name=f"{DAY:%A %d %B %Y}")).to_have_count(1)
        rows = page.locator("#main li.booking")
        expect(rows).to_have_count(3)  # the series is one row
        expect(page.get_by_text("Repeats: 3 occurrences", exact=False)).to_be_visible()
        for name in ("Edit", "Cancel"):
            for link in page.get_by_role("link", name=name).all():
                box = link.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (name, box)
        found = page.evaluate(OUTSIDE_VIEWPORT)
        assert found["outside"] == [] and found["scrollWidth"] <= found["width"], found
        screenshot(page, "phone-my-reservations-390")
        assert_accessible(page)

        # The finder on a phone: the results before the form.
        page.goto(f"{stack.url}/?date={DAY.isoformat()}&start=10:00&end=11:00")
        results = page.get_by_role("heading", name="rooms free", exact=False).bounding_box()
        form = page.get_by_role("button", name="Show rooms").bounding_box()
        assert results["y"] < form["y"]
        assert page.evaluate(OUTSIDE_VIEWPORT)["outside"] == []
        page.goto(f"{stack.url}/grid?date={DAY.isoformat()}")
        expect(page.get_by_role("table")).to_be_hidden()  # on a phone the grid is a list per room
        expect(page.get_by_role("link", name="Book Atlas 10:00–11:00")).to_be_visible()
        assert page.evaluate(OUTSIDE_VIEWPORT)["outside"] == []
        assert_accessible(page)
        screenshot(page, "phone-room-grid")
    finally:
        context.close()

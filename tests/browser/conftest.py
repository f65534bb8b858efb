"""Browser tests: real headless Chromium against the whole stack (shared by every browser test).

`stack` starts what a person's browser would meet: the Calendar emulator with the demo seed
(rooms, people, the service account, the `roombridge-dev` sign-in client), the app on a live
port in AUTH_MODE=oidc against the emulator's provider, the demo rooms in the app's database,
and an RQ worker process draining every queue, so bookings really reach the emulator.
`page` is a fresh browser context per test (one Chromium for the whole run). The helpers the
tests call are in tests/support.py: `sign_in_browser(page, stack, email)` goes through the
emulator's account picker; `screenshot(page, name)` saves to test-artifacts/;
`assert_accessible(page)` runs the vendored axe-core and fails on serious or critical
violations.

Browser tests use SQLite only: what they prove does not depend on the database, and each one
costs seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from emulator import DEMO_ROOMS, seed_demo
from emulator.oidc import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from roombridge import db
from roombridge.models import Room
from tests.support import Stack, screenshot, start_worker, stop_worker

CHROMIUM = os.environ.get("ROOMBRIDGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(params=["sqlite"])
def database_url(request, tmp_path):
    """SQLite only, overriding the suite's sqlite+postgresql parametrisation for browser tests."""
    path = tmp_path / "roombridge.sqlite3"
    shutil.copy(request.getfixturevalue("sqlite_template"), path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM} (scripts/ensure-services.sh chromium installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI must not pass without the browser tests
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    context.set_default_timeout(10_000)
    tab = context.new_page()
    refused = []  # the page's own scripts and styles must live within its Content-Security-Policy
    tab.on("console", lambda message: refused.append(message.text)
           if "Content Security Policy" in message.text else None)
    yield tab
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        screenshot(tab, f"FAILED-{request.node.name}")
    context.close()
    assert not refused, "the Content-Security-Policy refused something:\n" + "\n".join(refused)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def stack(make_app, emulator, live_server_factory, tmp_path):
    key = seed_demo(emulator)
    key_file = tmp_path / "service-account.json"
    key_file.write_text(json.dumps(key))
    from webapp import auth

    auth._providers.clear()  # a new emulator on a new port: forget discovery of the last one
    app = make_app(
        AUTH_MODE="oidc", OIDC_ISSUER=emulator.url, OIDC_CLIENT_ID=DEMO_CLIENT_ID,
        OIDC_CLIENT_SECRET=DEMO_CLIENT_SECRET, ALLOWED_DOMAINS="example.com",
        GOOGLE_SERVICE_ACCOUNT_FILE=str(key_file), GOOGLE_CALENDAR_API_URL=emulator.calendar_api_url,
    )
    server = live_server_factory(app)
    # The push address is the live server's, known only once it listens.
    app.config["ROOMBRIDGE"] = dataclasses.replace(app.config["ROOMBRIDGE"], WEBHOOK_BASE_URL=server.url)
    rooms = {}
    with app.app_context():
        session = db.session()
        for spec in DEMO_ROOMS:
            room = Room(calendar_id=spec["email"], name=spec["name"], capacity=spec["capacity"],
                        building=spec["building"], floor=spec["floor"], features=spec["features"],
                        time_zone=spec["time_zone"], in_scope=True, access_role="writer")
            session.add(room)
            session.flush()
            rooms[room.name] = room.id
        session.commit()

    log_file = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed after the worker ends
    worker = start_worker(app, output=log_file)
    try:
        yield Stack(app=app, emulator=emulator, rooms=rooms, url=server.url)
    finally:
        stop_worker(worker)
        log_file.close()
        log = (tmp_path / "worker.log").read_text(errors="replace")
        if "Traceback" in log:
            print("worker log:\n" + log[-4000:])

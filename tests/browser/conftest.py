"""Browser tests: real headless Chromium against the whole stack (shared by every browser test).

`stack` starts what a person's browser would meet: the Calendar emulator with the demo seed
(rooms, people, the service account, the `roombridge-dev` sign-in client), the app on a live
port in AUTH_MODE=oidc against the emulator's provider, the demo rooms in the app's database,
and an RQ worker process draining every queue, so bookings really reach the emulator.
`page` is a fresh browser context per test (one Chromium for the whole run); `sign_in(page,
stack, email)` goes through the emulator's account picker; `screenshot(page, name)` saves to
test-artifacts/; `assert_accessible(page)` runs the vendored axe-core and fails on serious or
critical violations.

Browser tests use SQLite only: what they prove does not depend on the database, and each one
costs seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emulator import DEMO_ROOMS, seed_demo
from emulator.oidc import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from roombridge import db
from roombridge.models import Room

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
AXE = Path(__file__).with_name("axe.min.js")
CHROMIUM = os.environ.get("ROOMBRIDGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
BLOCKING_IMPACTS = ("serious", "critical")


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


@dataclasses.dataclass
class Stack:
    url: str
    app: object
    emulator: object
    rooms: dict[str, int]  # room name -> id in the app


def _worker_env(app, key_file: str) -> dict[str, str]:
    config = app.config["ROOMBRIDGE"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMBRIDGE_")}
    for name in ("ENV", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "GOOGLE_CALENDAR_API_URL", "WEBHOOK_BASE_URL",
                 "AUTH_MODE", "OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET"):
        env[name] = str(getattr(config, name))
    env["GOOGLE_SERVICE_ACCOUNT_FILE"] = key_file
    env["ADMIN_EMAILS"] = ",".join(sorted(config.ADMIN_EMAILS))
    return env


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
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT, env=_worker_env(app, str(key_file)),
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    try:
        yield Stack(url=server.url, app=app, emulator=emulator, rooms=rooms)
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
        log_file.close()
        log = (tmp_path / "worker.log").read_text(errors="replace")
        if "Traceback" in log:
            print("worker log:\n" + log[-4000:])


def sign_in(page, stack: Stack, email: str = "alice@example.com", next_path: str = "/") -> None:
    """Sign in as a person would: the app sends the browser to the emulator's account picker."""
    page.goto(f"{stack.url}/signin?next={next_path}")
    page.wait_for_url(f"{stack.emulator.url}/o/oauth2/v2/auth*")
    page.get_by_role("button", name=email).click()
    page.wait_for_url(f"{stack.url}{next_path}*")


def screenshot(page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def assert_accessible(page, *, context: str | None = None) -> list[dict]:
    """Run axe-core (vendored, never fetched) on the page; fail on serious or critical violations."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, which the page's CSP does not govern; a
        # <script> tag with the source inline (add_script_tag) would be refused, as it should.
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    results = page.evaluate("""async (selector) => await window.axe.run(selector || document, {
        resultTypes: ['violations'],
        runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']},
    })""", context)
    blocking = [v for v in results["violations"] if v["impact"] in BLOCKING_IMPACTS]
    report = "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(n["html"][:160] for n in v["nodes"][:5])
        for v in blocking
    )
    assert not blocking, f"accessibility violations on {page.url}:\n{report}"
    return results["violations"]


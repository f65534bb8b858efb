"""Web hardening: headers on every answer, bounded bodies, the public address behind a proxy,
what /readyz tells strangers, the access log, Redis with a password, and refusing to start."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from redis import Redis
from rq.scheduler import RQScheduler

from emulator import seed_demo
from emulator.oidc import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from roombridge import api_tokens, db
from roombridge.queue import queue, redis
from tests.support import free_port, run_jobs, start_redis_server, wait_until
from tests.webapp.signin import sign_in
from webapp import CONFIG_REFUSED_EXIT_CODE, auth

ROOT = Path(__file__).resolve().parents[2]
PROTECTIVE = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


def _token(app, email="alice@example.com") -> str:
    with app.app_context():
        return api_tokens.create(db.session(), email).token


def _assert_protected(response, what: str = "") -> None:
    for name, value in PROTECTIVE.items():
        assert response.headers.get(name) == value, (what, name, response.status_code)
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert policy["frame-ancestors"] == "'none'"


def test_every_kind_of_answer_carries_the_security_headers(app, client):
    token = _token(app)
    sign_in(client)
    answers = {
        "page": client.get("/"),
        "sign-in page": client.get("/signin?switch=1"),
        "static file": client.get("/static/roombridge.css"),
        "API answer": client.get("/api/v1/rooms", headers={"Authorization": f"Bearer {token}"}),
        "API refusal": client.get("/api/v1/rooms"),
        "page 404": client.get("/no/such/page"),
        "API 404": client.get("/api/v1/nothing", headers={"Authorization": f"Bearer {token}"}),
        "webhook": client.post("/webhooks/google/calendar"),
        "probe": client.get("/healthz"),
    }
    assert answers["page"].status_code == 200 and answers["page 404"].status_code == 404
    assert answers["API answer"].status_code == 200 and answers["API 404"].status_code == 404
    for what, response in answers.items():
        response.close()  # a static file's answer holds the file open
        _assert_protected(response, what)
        assert "Strict-Transport-Security" not in response.headers  # not outside production


def test_production_adds_hsts(make_app):
    app = make_app(ENV="production", AUTH_MODE="oidc", ALLOWED_DOMAINS="example.com")
    response = app.test_client().get("/healthz")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    _assert_protected(response)


def test_templates_have_no_inline_script_or_event_handlers():
    import re

    templates = list((ROOT / "webapp" / "templates").rglob("*.html"))
    assert templates
    for template in templates:
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, f"inline <script> in {template.name}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"inline event handler in {template.name}"
        assert "javascript:" not in text.lower(), template.name


# --- bodies ---------------------------------------------------------------------------------------


def _oversized_booking() -> bytes:
    return b'{"room_id": 1, "title": "' + b"x" * (300 * 1024) + b'", "start": "2030-01-07T10:00:00Z"}'


def test_a_chunked_body_over_the_limit_is_refused_with_json_413(app, live_server_factory):
    """No Content-Length to check up front: the size is enforced while the body is read."""
    server = live_server_factory(app)
    body = _oversized_booking()

    def chunks():
        for start in range(0, len(body), 16 * 1024):
            yield body[start:start + 16 * 1024]

    answer = requests.post(f"{server.url}/api/v1/reservations", data=chunks(), timeout=30,
                           headers={"Authorization": f"Bearer {_token(app)}", "Content-Type": "application/json"})
    assert answer.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in answer.request.headers
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["error"] == "request_entity_too_large"
    _assert_protected(answer)


def test_a_declared_body_over_the_limit_is_refused_with_json_413(app, client):
    answer = client.post("/api/v1/reservations", data=_oversized_booking(), content_type="application/json",
                         headers={"Authorization": f"Bearer {_token(app)}"})
    assert answer.status_code == 413
    assert answer.get_json()["error"] == "request_entity_too_large"


# --- behind a proxy -------------------------------------------------------------------------------


@pytest.fixture
def oidc_settings(emulator):
    seed_demo(emulator)
    auth._providers.clear()
    return dict(AUTH_MODE="oidc", OIDC_ISSUER=emulator.url, OIDC_CLIENT_ID=DEMO_CLIENT_ID,
                OIDC_CLIENT_SECRET=DEMO_CLIENT_SECRET, ALLOWED_DOMAINS="example.com")


def _redirect_uri(response) -> str:
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return parse_qs(urlsplit(response.headers["Location"]).query)["redirect_uri"][0]


def test_behind_a_tls_terminating_proxy_the_redirect_uri_is_the_public_https_one(make_app, oidc_settings):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "rooms.example.com",
                 "X-Forwarded-For": "203.0.113.9"}
    trusting = make_app(PROXY_FIX_HOPS=1, **oidc_settings).test_client()
    assert _redirect_uri(trusting.get("/signin", headers=forwarded)) == "https://rooms.example.com/signin/callback"
    # Without a configured hop the headers are a client's to forge, so they are ignored.
    naive = make_app(**oidc_settings).test_client()
    assert _redirect_uri(naive.get("/signin", headers=forwarded)) == "http://localhost/signin/callback"


def test_public_base_url_builds_the_redirect_uri_whatever_the_host(make_app, oidc_settings):
    client = make_app(PUBLIC_BASE_URL="https://rooms.example.com/", **oidc_settings).test_client()
    answer = client.get("/signin", headers={"Host": "10.0.0.7:5000"})
    assert _redirect_uri(answer) == "https://rooms.example.com/signin/callback"


# --- /readyz --------------------------------------------------------------------------------------


def test_readyz_names_the_component_but_not_its_error(make_app, caplog):
    client = make_app(DATABASE_URL="postgresql+psycopg://nobody:hunter2@127.0.0.1:1/secretdb").test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["failures"] == {"database": "unavailable"}
    text = response.get_data(as_text=True)
    for leak in ("nobody", "hunter2", "secretdb", "127.0.0.1", "Error"):
        assert leak not in text
    assert "readyz: the database does not answer" in caplog.text  # the reason is in the log


# --- the access log -------------------------------------------------------------------------------


def test_the_oidc_code_never_reaches_the_access_log(tmp_path, redis_url):
    """gunicorn as the Procfile runs it: the log line has the path, never the query string."""
    from benchmarks.harness import gunicorn_args

    port = free_port()
    env = {**os.environ, "ENV": "development", "AUTH_MODE": "oidc", "SECRET_KEY": "k",
           "OIDC_ISSUER": "http://127.0.0.1:1", "OIDC_CLIENT_ID": "c", "REDIS_URL": redis_url,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "WEB_CONCURRENCY": "1"}
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        web = subprocess.Popen(gunicorn_args(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def answers():
            try:
                return requests.get(f"{url}/healthz", timeout=2).ok
            except requests.RequestException:  # not listening yet, or its worker still booting
                return False

        wait_until(answers, timeout=30, what="gunicorn")
        secret = "4/0AVG7fiTHE-SECRET-CODE"
        answer = requests.get(f"{url}/signin/callback", params={"code": secret, "state": "s"}, timeout=5,
                              headers={"Referer": f"{url}/signin/callback?code={secret}"})
        assert answer.status_code == 400
        wait_until(lambda: "/signin/callback" in log_path.read_text(), timeout=10, what="the access log line")
    finally:
        web.terminate()
        web.wait(15)
    logged = log_path.read_text()
    assert '"GET /signin/callback HTTP/1.1" 400' in logged
    assert secret not in logged and "SECRET-CODE" not in logged


# --- Redis with a password ------------------------------------------------------------------------


def test_redis_with_a_password_serves_probes_queues_and_workers(make_app):
    port = free_port()
    server = start_redis_server(port, "--requirepass", "s3cret-pass")
    try:
        with pytest.raises(Exception, match="(?i)auth"):
            Redis(port=port).ping()  # the server really wants the password
        app = make_app(REDIS_URL=f"redis://:s3cret-pass@127.0.0.1:{port}/0")
        assert app.test_client().get("/readyz").status_code == 200
        with app.app_context():
            job = queue("default").enqueue(len, "abc")
            later = queue("default").enqueue_in(timedelta(0), len, "abcd")  # a delayed retry's path
            # The worker's scheduler opens its own connection from the app's: the password must carry over.
            scheduler = RQScheduler([queue("default")], connection=redis())
            assert scheduler.acquire_locks() and scheduler.connection.ping()
            scheduler.enqueue_scheduled_jobs()
            scheduler.release_locks()
        assert run_jobs(app) == 2
        with app.app_context():
            job.refresh()
            later.refresh()
            assert job.return_value() == 3 and later.return_value() == 4
        wrong = make_app(REDIS_URL=f"redis://:wrong@127.0.0.1:{port}/0").test_client().get("/readyz")
        assert wrong.status_code == 503 and wrong.get_json()["failures"] == {"redis": "unavailable"}
    finally:
        server.terminate()
        server.wait(10)


def test_rediss_urls_speak_tls(make_app):
    app = make_app(REDIS_URL="rediss://:pw@redis.internal:6380/2")
    from redis.connection import SSLConnection

    with app.app_context():
        pool = redis().connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["password"] == "pw" and pool.connection_kwargs["db"] == 2


# --- refusing to start ----------------------------------------------------------------------------


def _clean_env(**settings) -> dict[str, str]:
    names = ("ENV", "AUTH_MODE", "ALLOWED_DOMAINS", "SECRET_KEY", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("ROOMBRIDGE_")}
    return {**env, **settings}


@pytest.mark.parametrize("settings, reason", [
    ({}, "SECRET_KEY must be set"),  # nothing said: production, and it fails closed
    ({"SECRET_KEY": "k"}, "ALLOWED_DOMAINS"),
    ({"SECRET_KEY": "k", "AUTH_MODE": "dev"}, "AUTH_MODE=dev"),
    ({"SECRET_KEY": "k", "ENV": "production", "AUTH_MODE": "dev", "ALLOWED_DOMAINS": "example.com"},
     "AUTH_MODE=dev"),
])
@pytest.mark.parametrize("process", [["worker", "--burst"], ["scheduler"]])
def test_worker_and_scheduler_refuse_to_start_with_one_line(process, settings, reason):
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *process], cwd=ROOT,
                          env=_clean_env(**settings), capture_output=True, text=True, timeout=60)
    assert done.returncode == CONFIG_REFUSED_EXIT_CODE, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roombridge: refusing to start: "), done.stderr[-2000:]
    assert reason in lines[0]


def test_gunicorn_refuses_to_start_and_stops(tmp_path):
    """The Procfile's web process exits (gunicorn's master stops) instead of respawning workers."""
    from benchmarks.harness import gunicorn_args

    done = subprocess.run(gunicorn_args(free_port()), cwd=ROOT, env=_clean_env(SECRET_KEY="k"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    refusals = [line for line in done.stderr.splitlines() if line.startswith("roombridge: refusing to start")]
    assert refusals and "ALLOWED_DOMAINS" in refusals[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr

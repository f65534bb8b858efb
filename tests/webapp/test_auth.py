"""Sign-in and sign-out: the dev picker, OpenID Connect against the emulator, sessions and CSRF."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from emulator import seed_demo
from emulator.oidc import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, provider_for
from roombridge.config import Config, ConfigError
from tests.webapp.signin import csrf_token, sign_in
from webapp import auth


def test_pages_need_a_signed_in_user(client):
    response = client.get("/reservations")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/signin?next=/reservations")


def test_dev_mode_picks_a_demo_account_and_signs_out(client):
    page = client.get("/signin").get_data(as_text=True)
    for email, _name in auth.DEMO_ACCOUNTS:
        assert email in page
    sign_in(client, "bob@example.com")
    home = client.get("/").get_data(as_text=True)
    assert "Bob Baker" in home
    assert 'href="/admin/"' not in home  # bob is no admin

    response = client.post("/signout", data={"csrf_token": csrf_token(client, "/")})
    assert response.status_code == 302
    assert client.get("/").status_code == 302
    with client.session_transaction() as session:
        assert "user" not in session


def test_dev_mode_refuses_unknown_accounts(client):
    response = client.post("/signin", data={"email": "mallory@example.com", "csrf_token": csrf_token(client)})
    assert response.status_code == 400
    with client.session_transaction() as session:
        assert "user" not in session


def test_admins_are_the_addresses_in_admin_emails(client):
    sign_in(client, "admin@example.com")
    assert 'href="/admin/"' in client.get("/").get_data(as_text=True)


def test_admin_required_refuses_others(app):
    @app.get("/_test/admin-only")
    @auth.admin_required
    def admin_only():
        return "secret"

    client = app.test_client()
    assert client.get("/_test/admin-only").status_code == 302
    sign_in(client, "alice@example.com")
    assert client.get("/_test/admin-only").status_code == 403
    sign_in(client, "admin@example.com")
    assert client.get("/_test/admin-only").get_data(as_text=True) == "secret"


def test_forms_without_csrf_token_are_refused(client):
    assert client.post("/signin", data={"email": "alice@example.com"}).status_code == 400
    sign_in(client, "alice@example.com")
    assert client.post("/signout").status_code == 400
    assert client.get("/").status_code == 200  # still signed in


def test_sign_in_follows_only_local_next_paths(client):
    token = csrf_token(client)
    response = client.post("/signin", data={"email": "alice@example.com", "csrf_token": token,
                                            "next": "https://evil.example/steal"})
    assert response.headers["Location"] == "/"
    client.post("/signout", data={"csrf_token": csrf_token(client, "/")})
    response = client.post("/signin", data={"email": "alice@example.com", "csrf_token": csrf_token(client),
                                            "next": "/reservations"})
    assert response.headers["Location"] == "/reservations"


def test_dev_auth_is_refused_in_production():
    with pytest.raises(ConfigError):
        Config.from_env({}, ENV="production", SECRET_KEY="k", AUTH_MODE="dev")


def test_session_cookie_is_httponly_and_samesite(client):
    sign_in(client)
    cookie = client.get_cookie("session")
    assert cookie.http_only and cookie.same_site == "Lax"


def test_session_cookie_is_secure_outside_development(make_app):
    app = make_app(ENV="production", AUTH_MODE="oidc", OIDC_CLIENT_ID="x", ALLOWED_DOMAINS="example.com")
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_a_cookie_copied_before_sign_out_is_refused_after_it(app, client):
    sign_in(client, "alice@example.com")
    stolen = client.get_cookie("session").value
    assert client.get("/reservations").status_code == 200

    client.post("/signout", data={"csrf_token": csrf_token(client, "/")})
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    response = replay.get("/reservations")
    assert response.status_code == 302 and response.headers["Location"].startswith("/signin")
    assert replay.get("/").status_code == 302


def test_signing_out_ends_only_that_session(app):
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop, "alice@example.com")
    sign_in(phone, "alice@example.com")
    laptop.post("/signout", data={"csrf_token": csrf_token(laptop, "/")})
    assert laptop.get("/reservations").status_code == 302
    assert phone.get("/reservations").status_code == 200


def test_a_session_lives_session_lifetime_hours_in_the_cookie_and_in_redis(make_app):
    from roombridge.queue import redis

    app = make_app(SESSION_LIFETIME_HOURS=2)
    client = app.test_client()
    sign_in(client)
    cookie = client.get_cookie("session")
    assert cookie.expires is not None
    assert 7100 < cookie.expires.timestamp() - time.time() <= 7200
    with app.app_context():
        keys = redis().keys(auth.SESSION_KEY.format("*"))
        assert len(keys) == 1 and 7100 < redis().ttl(keys[0]) <= 7200
        redis().delete(*keys)  # the lifetime ran out
    assert client.get("/reservations").status_code == 302


def test_session_lifetime_defaults_to_twelve_hours_and_cannot_exceed_a_month():
    assert Config.from_env({}, ENV="development").SESSION_LIFETIME_HOURS == 12
    with pytest.raises(ConfigError, match="SESSION_LIFETIME_HOURS"):
        Config.from_env({"SESSION_LIFETIME_HOURS": "1000"}, ENV="development")


def test_a_forged_session_id_signs_no_one_in(app, client):
    sign_in(client, "alice@example.com")
    with client.session_transaction() as session:
        session["user"] = {"email": "admin@example.com", "name": "Admin"}  # a cookie signed with a leaked key
    assert client.get("/admin/").status_code == 302


def test_dev_sign_in_is_limited_to_allowed_domains(make_app):
    client = make_app(ALLOWED_DOMAINS="other.example").test_client()
    page = client.get("/signin").get_data(as_text=True)
    assert "alice@example.com" not in page
    response = client.post("/signin", data={"email": "alice@example.com", "csrf_token": csrf_token(client)})
    assert response.status_code == 403
    with client.session_transaction() as session:
        assert "user" not in session


# --- OpenID Connect against the emulator's provider ---------------------------------------------


@pytest.fixture
def oidc_app(make_app, emulator):
    seed_demo(emulator)
    auth._providers.clear()
    return make_app(AUTH_MODE="oidc", OIDC_ISSUER=emulator.url, OIDC_CLIENT_ID=DEMO_CLIENT_ID,
                    OIDC_CLIENT_SECRET=DEMO_CLIENT_SECRET, ALLOWED_DOMAINS="example.com")


def _follow_to_provider(client, next_path="/reservations"):
    response = client.get(f"/signin?next={next_path}")
    assert response.status_code == 302
    return response.headers["Location"]


def _pick(authorize_url, email):
    parts = urlsplit(authorize_url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    chosen = requests.post(authorize_url.split("?")[0], data={**params, "email": email},
                           allow_redirects=False, timeout=5)
    assert chosen.status_code == 302, chosen.text
    return chosen.headers["Location"], params


def test_oidc_sign_in_through_the_emulator(oidc_app, emulator):
    client = oidc_app.test_client()
    authorize_url = _follow_to_provider(client)
    assert authorize_url.startswith(emulator.url + "/o/oauth2/v2/auth?")
    callback, params = _pick(authorize_url, "carol@example.com")
    assert params["redirect_uri"] == "http://localhost/signin/callback"
    assert params["nonce"] and params["state"]

    response = client.get(callback.replace("http://localhost", ""))
    assert response.status_code == 302 and response.headers["Location"] == "/reservations"
    with client.session_transaction() as session:
        assert session["user"] == {"email": "carol@example.com", "name": "Carol Carter"}


def _sign_in_through_the_provider(client, email):
    callback, _params = _pick(_follow_to_provider(client), email)
    return client.get(callback.replace("http://localhost", ""))


def test_the_authorization_request_hints_the_organisation(oidc_app):
    authorize_url = _follow_to_provider(oidc_app.test_client())
    assert parse_qs(urlsplit(authorize_url).query)["hd"] == ["example.com"]


@pytest.mark.parametrize("email, hosted_domain", [
    ("mallory@gmail.com", "default"),  # a consumer Google account: Google sends no hd
    ("eve@other.example", "default"),  # another organisation's Workspace account
    ("alice@example.com", None),  # a personal Google account made with a work address
    ("mole@other.example", "example.com"),  # our Workspace, but an address outside our domains
])
def test_oidc_refuses_anyone_outside_the_organisation(oidc_app, emulator, email, hosted_domain):
    emulator.state.add_user(email, "Outsider")
    if hosted_domain != "default":
        requests.post(emulator.url + "/_emulator/oidc/accounts", json={"email": email, "hd": hosted_domain},
                      timeout=5).raise_for_status()
    client = oidc_app.test_client()
    response = _sign_in_through_the_provider(client, email)
    assert response.status_code == 400
    assert "organisation" in response.get_data(as_text=True)
    with client.session_transaction() as session:
        assert "user" not in session
    assert client.get("/reservations").status_code == 302


def test_oidc_admits_the_organisations_workspace_accounts(oidc_app):
    client = oidc_app.test_client()
    assert _sign_in_through_the_provider(client, "bob@example.com").status_code == 302
    assert client.get("/reservations").status_code == 200


def test_oidc_callback_with_a_forged_state_is_refused(oidc_app):
    client = oidc_app.test_client()
    callback, _params = _pick(_follow_to_provider(client), "alice@example.com")
    forged = callback.replace("state=", "state=x")
    response = client.get(forged.replace("http://localhost", ""))
    assert response.status_code == 400
    with client.session_transaction() as session:
        assert "user" not in session


def test_oidc_code_cannot_be_replayed(oidc_app):
    client = oidc_app.test_client()
    callback, _params = _pick(_follow_to_provider(client), "alice@example.com")
    path = callback.replace("http://localhost", "")
    assert client.get(path).status_code == 302
    client.post("/signout", data={"csrf_token": csrf_token(client, "/")})
    assert client.get(path).status_code == 400  # the flow was used up in the session


def _token(emulator, **claims):
    key_id, pem, _numbers = provider_for(emulator.state)._signing_key()
    now = int(time.time())
    body = {"iss": emulator.url, "aud": DEMO_CLIENT_ID, "sub": "1", "email": "alice@example.com",
            "email_verified": True, "name": "Alice", "nonce": "n", "iat": now, "exp": now + 600,
            "hd": "example.com", **claims}
    return jwt.encode(body, pem, algorithm="RS256", headers={"kid": key_id})


@pytest.mark.parametrize("claims, problem", [
    ({"aud": "someone-else"}, "audience"),
    ({"iss": "https://issuer.example"}, "issuer"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    ({"nonce": "other"}, "nonce"),
    ({"email_verified": False}, "e-mail"),
    ({"hd": None}, "organisation"),
    ({"hd": "other.example"}, "organisation"),
    ({"hd": "EXAMPLE.COM.evil"}, "organisation"),
    ({"email": "alice@other.example"}, "organisation"),
])
def test_id_tokens_are_verified(oidc_app, emulator, claims, problem):
    with oidc_app.test_request_context():
        assert auth.verify_id_token(_token(emulator), nonce="n")["email"] == "alice@example.com"
        with pytest.raises(auth.SignInError, match="(?i)" + problem):
            auth.verify_id_token(_token(emulator, **claims), nonce="n")


def test_id_token_signed_by_another_key_is_refused(oidc_app, emulator):
    from emulator.auth import new_key_pair

    other_pem, _public = new_key_pair()
    key_id = provider_for(emulator.state)._signing_key()[0]
    now = int(time.time())
    forged = jwt.encode({"iss": emulator.url, "aud": DEMO_CLIENT_ID, "sub": "1", "email": "admin@example.com",
                         "email_verified": True, "nonce": "n", "iat": now, "exp": now + 600},
                        other_pem, algorithm="RS256", headers={"kid": key_id})
    with oidc_app.test_request_context(), pytest.raises(auth.SignInError, match="(?i)signature"):
        auth.verify_id_token(forged, nonce="n")


def test_sessions_fail_closed_while_redis_is_down_and_after_it_restarts_empty(make_app, own_redis):
    from roombridge.queue import redis

    url, stop, restart = own_redis
    app = make_app(REDIS_URL=url)
    client = app.test_client()
    sign_in(client)
    assert client.get("/reservations").status_code == 200

    stop()
    assert client.get("/reservations").status_code == 503  # not a guess either way
    restart()  # without persistence: every session is forgotten, so everyone signs in again
    assert client.get("/reservations").status_code == 302
    redis(app).connection_pool.disconnect()

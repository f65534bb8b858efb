"""API tokens: an optional expiry, listed and revoked by their owner (a page) and by admins (the console)."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from roombridge import api_tokens, db
from roombridge.booking import quotas
from roombridge.db import utcnow
from roombridge.models import ApiToken
from tests.support import invoke_ok
from tests.webapp.signin import csrf_token, sign_in


def api_status(app, token: str) -> int:
    return app.test_client().get("/api/v1/rooms", headers={"Authorization": f"Bearer {token}"}).status_code


def make_token(app, email: str, **kwargs) -> tuple[int, str]:
    with app.app_context():
        new = api_tokens.create(db.session(), email, **kwargs)
        return new.record.id, new.token


def test_a_token_made_with_an_expiry_answers_401_once_it_has_expired(app, runner):
    token = invoke_ok(runner, ["tokens", "create", "alice@example.com", "--expires-in-days", "7"]).output.strip()
    assert api_status(app, token) == 200
    listed = invoke_ok(runner, ["tokens", "list"]).output
    assert "live, expires " in listed
    with app.app_context():
        record = db.session().scalar(sa.select(ApiToken))
        assert timedelta(days=6, hours=23) < record.expires_at - utcnow() <= timedelta(days=7)
        record.expires_at = utcnow() - timedelta(seconds=1)
        db.session().commit()
    answer = app.test_client().get("/api/v1/rooms", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401 and answer.json["error"] == "unauthorized"
    assert "expired " in invoke_ok(runner, ["tokens", "list"]).output
    refused = runner.invoke(args=["tokens", "create", "alice@example.com", "--expires-in-days", "0"])
    assert refused.exit_code != 0


def test_owners_make_list_and_revoke_their_own_tokens_on_a_page(app, client):
    bobs_id, bobs_token = make_token(app, "bob@example.com")
    sign_in(client, "alice@example.com")
    made = client.post("/tokens", data={"expires_in_days": "30", "csrf_token": csrf_token(client, "/tokens")})
    assert made.status_code == 200
    [token] = re.findall(r'<code class="new-token">(rb_[^<]+)</code>', made.get_data(as_text=True))
    assert api_status(app, token) == 200
    page = client.get("/tokens").get_data(as_text=True)
    assert token[:9] in page and token not in page  # listed by prefix; the secret is shown once only
    assert bobs_token[:9] not in page and "live until" in page
    with app.app_context():
        alices_id = db.session().scalar(sa.select(ApiToken.id).where(ApiToken.user_email == "alice@example.com"))

    token_csrf = csrf_token(client, "/tokens")
    assert client.post(f"/tokens/{bobs_id}/revoke", data={"csrf_token": token_csrf}).status_code == 404
    assert api_status(app, bobs_token) == 200  # not hers to revoke
    assert client.post(f"/tokens/{alices_id}/revoke", data={"csrf_token": token_csrf}).status_code == 302
    assert api_status(app, token) == 401
    assert "revoked " in client.get("/tokens").get_data(as_text=True)
    assert client.post("/tokens", data={"expires_in_days": "0", "csrf_token": token_csrf}).status_code == 422


def test_admins_list_and_revoke_everyones_tokens_in_the_console(app, client):
    bobs_id, bobs_token = make_token(app, "bob@example.com", expires_in=timedelta(days=3))
    make_token(app, "carol@example.com")
    sign_in(client, "alice@example.com")
    assert client.get("/admin/tokens").status_code == 403
    sign_in(client, "admin@example.com")
    page = client.get("/admin/tokens").get_data(as_text=True)
    assert "bob@example.com" in page and "carol@example.com" in page and bobs_token[:9] in page
    response = client.post(f"/admin/tokens/{bobs_id}/revoke", data={"csrf_token": csrf_token(client, "/admin/")})
    assert response.status_code == 302
    assert api_status(app, bobs_token) == 401
    with app.app_context():
        assert db.session().get(ApiToken, bobs_id).revoked_at is not None


def test_the_console_shows_who_met_a_limit(app, client):
    with app.app_context():
        quotas.record_hit("bob@example.com", "booking writes per minute")
        quotas.record_hit("carol@example.com", "invitations per hour")
    sign_in(client, "admin@example.com")
    page = client.get("/admin/").get_data(as_text=True)
    assert "Limits met lately" in page
    assert page.index("carol@example.com: invitations per hour") < page.index("bob@example.com: booking writes")

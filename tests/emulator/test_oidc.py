"""The emulator's OpenID Connect provider, over real HTTP, as a relying party sees it."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from emulator import seed_demo
from emulator.oidc import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET

REDIRECT = "http://127.0.0.1:5999/signin/callback"


@pytest.fixture
def provider(emulator):
    seed_demo(emulator)
    discovery = requests.get(emulator.url + "/.well-known/openid-configuration", timeout=5).json()
    return emulator, discovery


def _authorize(discovery, email="alice@example.com", **overrides):
    params = {"response_type": "code", "client_id": DEMO_CLIENT_ID, "redirect_uri": REDIRECT,
              "scope": "openid email profile", "state": "st-1", "nonce": "n-1", **overrides}
    picker = requests.get(discovery["authorization_endpoint"], params=params, timeout=5)
    chosen = requests.post(discovery["authorization_endpoint"], data={**params, "email": email},
                           allow_redirects=False, timeout=5)
    return picker, chosen


def _code(chosen) -> str:
    assert chosen.status_code == 302, chosen.text
    location = urlsplit(chosen.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


def _exchange(discovery, code, **overrides):
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET, **overrides}
    return requests.post(discovery["token_endpoint"], data=form, timeout=5)


def test_discovery_names_the_emulator_as_issuer(provider):
    emulator, discovery = provider
    assert discovery["issuer"] == emulator.url
    assert discovery["jwks_uri"].startswith(emulator.url)
    assert "RS256" in discovery["id_token_signing_alg_values_supported"]


def test_code_flow_gives_an_id_token_that_verifies_with_the_published_keys(provider):
    emulator, discovery = provider
    picker, chosen = _authorize(discovery)
    assert picker.status_code == 200
    assert "alice@example.com" in picker.text and "bob@example.com" in picker.text
    answer = _exchange(discovery, _code(chosen))
    assert answer.status_code == 200, answer.text
    id_token = answer.json()["id_token"]

    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(id_token)
    claims = jwt.decode(id_token, key.key, algorithms=["RS256"], audience=DEMO_CLIENT_ID, issuer=emulator.url)
    assert claims["email"] == "alice@example.com"
    assert claims["email_verified"] is True
    assert claims["name"] == "Alice Archer"
    assert claims["nonce"] == "n-1"
    assert time.time() < claims["exp"] <= time.time() + 3700


def test_a_code_works_once_and_only_for_its_client_and_redirect(provider):
    _emulator, discovery = provider
    code = _code(_authorize(discovery)[1])
    assert _exchange(discovery, code, redirect_uri="http://127.0.0.1:5999/elsewhere").json()["error"] == "invalid_grant"
    # The failed attempt used the code up, as Google does.
    assert _exchange(discovery, code).json()["error"] == "invalid_grant"

    code = _code(_authorize(discovery)[1])
    wrong_secret = _exchange(discovery, code, client_secret="nope")
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    assert _exchange(discovery, "4/emu-made-up").json()["error"] == "invalid_grant"


def test_client_secret_basic_is_accepted(provider):
    _emulator, discovery = provider
    code = _code(_authorize(discovery)[1])
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    answer = requests.post(discovery["token_endpoint"], data=form, auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET), timeout=5)
    assert answer.status_code == 200 and answer.json()["id_token"]


def test_unknown_client_or_foreign_redirect_gets_an_error_page_not_a_redirect(provider):
    _emulator, discovery = provider
    picker, chosen = _authorize(discovery, client_id="stranger")
    assert picker.status_code == 400 and chosen.status_code == 400
    picker, chosen = _authorize(discovery, redirect_uri="https://evil.example/cb")
    assert picker.status_code == 400 and chosen.status_code == 400
    assert "Location" not in chosen.headers


def test_clients_registered_through_the_control_api_and_forgotten_on_reset(provider):
    emulator, discovery = provider
    registered = requests.post(emulator.url + "/_emulator/oidc/clients", timeout=5, json={
        "client_id": "other-app", "client_secret": "s3", "redirect_uris": [REDIRECT]})
    assert registered.status_code == 201
    code = _code(_authorize(discovery, client_id="other-app")[1])
    assert _exchange(discovery, code, client_id="other-app", client_secret="s3").status_code == 200

    requests.post(emulator.url + "/_emulator/reset", timeout=5)
    assert requests.get(emulator.url + "/_emulator/oidc/clients", timeout=5).json() == []


def test_unknown_person_cannot_be_signed_in(provider):
    _emulator, discovery = provider
    _picker, chosen = _authorize(discovery, email="mallory@example.com")
    assert chosen.status_code == 400


def _claims(emulator, discovery, email, **params):
    answer = _exchange(discovery, _code(_authorize(discovery, email=email, **params)[1]))
    assert answer.status_code == 200, answer.text
    return jwt.decode(answer.json()["id_token"], options={"verify_signature": False})


def test_hd_is_issued_for_workspace_accounts_only_like_google(provider):
    emulator, discovery = provider
    emulator.state.add_user("pat@gmail.com", "Pat Personal")
    emulator.state.add_user("olga@other.example", "Olga Other")
    assert "hd" in discovery["claims_supported"]
    assert _claims(emulator, discovery, "alice@example.com")["hd"] == "example.com"
    assert _claims(emulator, discovery, "olga@other.example")["hd"] == "other.example"
    assert "hd" not in _claims(emulator, discovery, "pat@gmail.com")  # a consumer account


def test_control_api_sets_a_persons_hosted_domain_until_reset(provider):
    emulator, discovery = provider
    # A personal Google account made with a work address: no hd, whatever the e-mail says.
    made = requests.post(emulator.url + "/_emulator/oidc/accounts", json={"email": "bob@example.com", "hd": None},
                         timeout=5)
    assert made.status_code == 200 and made.json() == {"email": "bob@example.com", "hd": None}
    assert "hd" not in _claims(emulator, discovery, "bob@example.com")
    requests.post(emulator.url + "/_emulator/oidc/accounts", json={"email": "bob@example.com", "hd": "Corp.example"},
                  timeout=5)
    assert _claims(emulator, discovery, "bob@example.com")["hd"] == "corp.example"
    assert requests.post(emulator.url + "/_emulator/oidc/accounts", json={"hd": "x"}, timeout=5).status_code == 400

    requests.post(emulator.url + "/_emulator/reset", timeout=5)
    seed_demo(emulator)
    assert _claims(emulator, discovery, "bob@example.com")["hd"] == "example.com"


def test_the_hd_parameter_narrows_the_picker_but_proves_nothing(provider):
    emulator, discovery = provider
    emulator.state.add_user("pat@gmail.com", "Pat Personal")
    picker, _chosen = _authorize(discovery, email="pat@gmail.com", hd="example.com")
    assert "alice@example.com" in picker.text and "pat@gmail.com" not in picker.text
    assert "hd" not in _claims(emulator, discovery, "pat@gmail.com", hd="example.com")  # chosen anyway
    picker, _chosen = _authorize(discovery, hd="*")
    assert "alice@example.com" in picker.text and "pat@gmail.com" not in picker.text

"""Google Sign-In, emulated: an OpenID Connect provider for the emulator's people.

Followed from Google's "OpenID Connect" guide (developers.google.com/identity/openid-connect):
- ``GET /.well-known/openid-configuration``: the discovery document; ``issuer`` is the
  emulator's base URL, the endpoints below hang off it.
- ``GET /o/oauth2/v2/auth``: the authorization endpoint. Needs ``response_type=code``, a
  registered ``client_id``, a ``redirect_uri`` (one registered for the client, or, as the
  emulator's relaxation, any http(s) URL on loopback when the client registered none), and a
  ``scope`` containing ``openid``; ``state`` and ``nonce`` are passed through. Instead of
  Google's consent screens it shows a small account picker listing the emulator's users;
  ``POST`` of the same URL with ``email`` signs that person in and redirects to the
  redirect URI with ``code`` and ``state``. Bad client or redirect URI: a 400 page, never a
  redirect (as Google does, so an attacker cannot bounce errors to any URL).
- ``POST /oidc/token``: the authorization-code grant. Client authentication by
  ``client_secret_post`` or ``client_secret_basic``; the code is single-use, bound to client
  and redirect URI, and lives ten minutes. Answers ``access_token``, ``expires_in``,
  ``token_type``, ``scope`` and ``id_token``; errors are RFC 6749 bodies
  (``invalid_client`` 401, ``invalid_grant`` / ``unsupported_grant_type`` /
  ``invalid_request`` 400). The service-account grant stays on ``POST /token``.
- ``GET /oauth2/v3/certs``: the JWKS with the RS256 public key (``kid`` in the token header).
- ID tokens: RS256, ``iss`` = base URL, ``aud`` = ``azp`` = client id, ``sub`` (stable per
  email), ``email``, ``email_verified`` (true), ``name``, ``nonce`` (if sent), ``iat``,
  ``exp`` (an hour later), and ``hd`` for Workspace accounts only: Google sends "the domain
  associated with the Google Cloud organization of the user ... only if the user belongs to a
  Google Cloud organization", never for consumer accounts. Here a person of ``gmail.com`` or
  ``googlemail.com`` is a consumer account and anyone else a Workspace account of their e-mail's
  domain, unless the control API says otherwise (a consumer account made with a work address
  has no ``hd``; a Workspace's secondary domain has the primary's). The ``hd`` request
  parameter is, as at Google, only a hint: it narrows the picker, not who may be chosen.
  Times are real time, like the service-account grant: the app verifies them with the real
  clock.

Clients are registered through the control API: ``POST /_emulator/oidc/clients``
``{"client_id", "client_secret", "redirect_uris"?: [...]}``; ``GET`` lists them (without
secrets). ``POST /_emulator/oidc/accounts`` ``{"email", "hd": "domain" | null}`` sets a
person's hosted domain (null: a consumer account). ``seed_demo`` registers ``roombridge-dev`` /
``dev-secret``. A reset of the emulator forgets clients, codes and hosted domains, like
everything else.
"""

import base64
import hashlib
import html
import secrets
import threading
import time
from urllib.parse import urlencode, urlparse

import jwt
from flask import Response, jsonify, redirect, request

from .auth import new_key_pair
from .errors import OAuthError

AUTHORIZE_PATH = "/o/oauth2/v2/auth"
TOKEN_PATH = "/oidc/token"
JWKS_PATH = "/oauth2/v3/certs"
DISCOVERY_PATH = "/.well-known/openid-configuration"
CODE_LIFETIME = 600
ID_TOKEN_LIFETIME = 3600
DEMO_CLIENT_ID = "roombridge-dev"
DEMO_CLIENT_SECRET = "dev-secret"
CONSUMER_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def _b64(number):
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _is_loopback_url(url):
    parts = urlparse(url)
    return parts.scheme in ("http", "https") and parts.hostname in ("127.0.0.1", "localhost", "::1")


class OidcProvider:
    """Clients, pending authorization codes and the signing key of one emulator."""

    def __init__(self, state):
        self.state = state
        self.lock = threading.Lock()
        self._key = None  # made on first use: most emulators in tests never sign anyone in
        self._clients = {}
        self._codes = {}
        self._hosted_domains = {}  # email -> hd (None: consumer account), overriding the rule
        self._generation = None

    def _current(self):
        # The emulator's reset starts a new generation (state._generation); clients and codes
        # belong to the generation they were made in, so a reset forgets them too.
        generation = getattr(self.state, "_generation", None)
        if generation != self._generation:
            self._generation = generation
            self._clients = {}
            self._codes = {}
            self._hosted_domains = {}

    def _signing_key(self):
        with self.lock:
            if self._key is None:
                pem, public_key = new_key_pair()
                self._key = (secrets.token_hex(8), pem, public_key.public_numbers())
            return self._key

    @property
    def issuer(self):
        return self.state.base_url

    def discovery(self):
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + AUTHORIZE_PATH,
            "token_endpoint": self.issuer + TOKEN_PATH,
            "jwks_uri": self.issuer + JWKS_PATH,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "email", "email_verified", "exp", "hd", "iat", "iss", "name", "sub",
                                 "nonce"],
            "grant_types_supported": ["authorization_code"],
        }

    def jwks(self):
        key_id, _pem, numbers = self._signing_key()
        return {"keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": key_id,
            "n": _b64(numbers.n), "e": _b64(numbers.e),
        }]}

    def register_client(self, client_id, client_secret, redirect_uris=None):
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret are required")
        with self.lock:
            self._current()
            self._clients[client_id] = {"client_id": client_id, "client_secret": client_secret,
                                        "redirect_uris": list(redirect_uris or [])}
            return {"client_id": client_id, "redirect_uris": list(redirect_uris or [])}

    def clients(self):
        with self.lock:
            self._current()
            return [{"client_id": c["client_id"], "redirect_uris": c["redirect_uris"]}
                    for c in self._clients.values()]

    def set_hosted_domain(self, email, hosted_domain):
        """Make `email` a Workspace account of `hosted_domain`, or (None) a consumer account."""
        if not email:
            raise ValueError("email is required")
        with self.lock:
            self._current()
            self._hosted_domains[email.lower()] = hosted_domain.lower() if hosted_domain else None
        return {"email": email, "hd": self.hosted_domain(email)}

    def hosted_domain(self, email):
        """The `hd` claim of this person: their Workspace's domain, or None for a consumer account."""
        email = email.lower()
        with self.lock:
            self._current()
            if email in self._hosted_domains:
                return self._hosted_domains[email]
        domain = email.rpartition("@")[2]
        return None if domain in CONSUMER_DOMAINS else domain

    def check_authorization_request(self, params):
        """Return the problem with an authorization request, or None when it may proceed."""
        with self.lock:
            self._current()
            client = self._clients.get(params.get("client_id", ""))
        if client is None:
            return "The OAuth client was not found. (invalid_client)"
        redirect_uri = params.get("redirect_uri", "")
        allowed = client["redirect_uris"]
        if (allowed and redirect_uri not in allowed) or (not allowed and not _is_loopback_url(redirect_uri)):
            return "redirect_uri_mismatch: the redirect URI is not registered for this client."
        if params.get("response_type") != "code":
            return "unsupported_response_type: only the authorization-code flow is supported."
        if "openid" not in (params.get("scope") or "").split():
            return "invalid_scope: the scope must include openid."
        return None

    def issue_code(self, params, email):
        with self.state.lock:
            person = self.state.users.get(email)
        if person is None:
            raise KeyError(email)
        code = "4/emu-" + secrets.token_urlsafe(32)
        with self.lock:
            self._current()
            self._codes[code] = {
                "client_id": params["client_id"],
                "redirect_uri": params["redirect_uri"],
                "email": person["email"],
                "name": person.get("name") or person["email"],
                "nonce": params.get("nonce"),
                "scope": params.get("scope"),
                "expires_at": time.time() + CODE_LIFETIME,
            }
        return code

    def exchange(self, form, authorization):
        """The authorization-code grant of POST /oidc/token; raises OAuthError like Google."""
        if form.get("grant_type") != "authorization_code":
            raise OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization is not None:  # client_secret_basic
            client_id, client_secret = authorization.username, authorization.password
        with self.lock:
            self._current()
            client = self._clients.get(client_id or "")
            if client is None or not secrets.compare_digest(str(client_secret or ""), client["client_secret"]):
                raise OAuthError(401, "invalid_client", "The OAuth client was not found or its secret is wrong.")
            if not form.get("code"):
                raise OAuthError(400, "invalid_request", "Missing required parameter: code")
            grant = self._codes.pop(form["code"], None)  # single use, whatever happens next
        if (grant is None or grant["client_id"] != client_id or grant["expires_at"] < time.time()
                or grant["redirect_uri"] != form.get("redirect_uri")):
            raise OAuthError(400, "invalid_grant", "Malformed auth code.")
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "azp": client_id,
            "aud": client_id,
            "sub": str(int(hashlib.sha256(grant["email"].encode()).hexdigest()[:15], 16)),
            "email": grant["email"],
            "email_verified": True,
            "name": grant["name"],
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME,
        }
        if grant["nonce"]:
            claims["nonce"] = grant["nonce"]
        hosted_domain = self.hosted_domain(grant["email"])
        if hosted_domain:
            claims["hd"] = hosted_domain
        key_id, pem, _numbers = self._signing_key()
        id_token = jwt.encode(claims, pem, algorithm="RS256", headers={"kid": key_id})
        return {
            "access_token": "ya29.emu-oidc-" + secrets.token_urlsafe(24),
            "expires_in": ID_TOKEN_LIFETIME,
            "token_type": "Bearer",
            "scope": grant["scope"],
            "id_token": id_token,
        }

    def people(self):
        with self.state.lock:
            return sorted((dict(u) for u in self.state.users.values()), key=lambda u: u["email"])


PICKER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Choose an account - Emulator sign-in</title>
<style>
body{{font-family:system-ui,sans-serif;margin:0;padding:1rem;background:#f6f7f9;color:#1b1f24}}
main{{max-width:28rem;margin:2rem auto;background:#fff;border:1px solid #c9ced6;border-radius:8px;padding:1.5rem}}
ul{{list-style:none;padding:0}} li{{margin:.5rem 0}}
button{{width:100%;text-align:left;padding:.75rem 1rem;font:inherit;background:#fff;color:#1b1f24;
border:1px solid #6b7380;border-radius:6px;cursor:pointer}}
button:hover{{background:#eef2f8}} button:focus-visible{{outline:3px solid #1a56db;outline-offset:2px}}
.email{{display:block;color:#454c56;font-size:.9rem}}
</style></head>
<body><main>
<h1>Choose an account</h1>
<p>to continue to <strong>{client}</strong> (Google Calendar emulator)</p>
<form method="post">
{hidden}
<ul>{people}</ul>
</form>
</main></body></html>
"""


def _matches_hint(provider, email, hint):
    """Google's `hd` request parameter narrows the accounts offered ("*": any Workspace one); it
    proves nothing, since the person can edit the URL."""
    if not hint:
        return True
    hosted_domain = provider.hosted_domain(email)
    return hosted_domain is not None and hint.lower() in ("*", hosted_domain)


def _picker(provider, params):
    hidden = "\n".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items() if k != "email"
    )
    offered = [p for p in provider.people() if _matches_hint(provider, p["email"], params.get("hd"))]
    people = "".join(
        f'<li><button type="submit" name="email" value="{html.escape(p["email"])}">'
        f'{html.escape(p.get("name") or p["email"])}<span class="email">{html.escape(p["email"])}</span>'
        f"</button></li>"
        for p in offered
    ) or "<li>No people exist in the emulator yet.</li>"
    return PICKER.format(client=html.escape(params.get("client_id", "")), hidden=hidden, people=people)


def _error_page(message):
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Error - Emulator sign-in'
            f"</title></head><body><main><h1>Sign-in error</h1><p>{html.escape(message)}</p></main></body></html>")
    return Response(body, status=400, mimetype="text/html")


def provider_for(state):
    """The OIDC provider attached to an emulator state (created on first use)."""
    provider = getattr(state, "oidc", None)
    if provider is None:
        provider = OidcProvider(state)
        state.oidc = provider
    return provider


def register(app, state):
    """Add the provider's routes and its control routes to the emulator's Flask app."""
    provider = provider_for(state)

    @app.get(DISCOVERY_PATH)
    def oidc_discovery():
        return jsonify(provider.discovery())

    @app.get(JWKS_PATH)
    def oidc_jwks():
        return jsonify(provider.jwks())

    @app.route(AUTHORIZE_PATH, methods=["GET", "POST"])
    def oidc_authorize():
        params = (request.args if request.method == "GET" else request.form).to_dict()
        problem = provider.check_authorization_request(params)
        if problem:
            return _error_page(problem)
        if request.method == "GET":
            return Response(_picker(provider, params), mimetype="text/html")
        email = params.get("email", "")
        try:
            code = provider.issue_code(params, email)
        except KeyError:
            return _error_page(f"No such person: {email}")
        answer = {"code": code}
        if params.get("state"):
            answer["state"] = params["state"]
        separator = "&" if "?" in params["redirect_uri"] else "?"
        return redirect(params["redirect_uri"] + separator + urlencode(answer), code=302)

    @app.post(TOKEN_PATH)
    def oidc_token():
        response = jsonify(provider.exchange(request.form.to_dict(), request.authorization))
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.post("/_emulator/oidc/clients")
    def oidc_register_client():
        body = request.get_json(silent=True) or {}
        return jsonify(provider.register_client(body.get("client_id"), body.get("client_secret"),
                                                body.get("redirect_uris"))), 201

    @app.post("/_emulator/oidc/accounts")
    def oidc_set_account():
        body = request.get_json(silent=True) or {}
        try:
            return jsonify(provider.set_hosted_domain(body.get("email"), body.get("hd"))), 200
        except ValueError as exc:
            return jsonify(error=str(exc)), 400

    @app.get("/_emulator/oidc/clients")
    def oidc_clients():
        return jsonify(provider.clients())

    return provider

"""Signing employees in and out: Google Sign-In (OpenID Connect) or, in development, a demo picker.

`AUTH_MODE=oidc` runs the authorization-code flow against `OIDC_ISSUER` (Google, or the
emulator's provider): state and nonce kept in the session, the code exchanged at the token
endpoint, and the ID token verified with PyJWT against the provider's published keys (issuer,
audience, expiry, signature, nonce). Only the organisation's people get in: the ID token's
`hd` claim (which Google sends only for Workspace accounts) must be one of `ALLOWED_DOMAINS`
and the e-mail's domain must be one of them too; the `hd` sent in the authorization request
is only a hint to Google's account chooser. `AUTH_MODE=dev` lets a person pick a demo account
(limited to `ALLOWED_DOMAINS` when it is set); Config refuses it in production and this module
refuses it again at request time.

The session holds `user = {"email", "name"}` and a session id; the id names a key in Redis that
lives `SESSION_LIFETIME_HOURS` and that signing out deletes, so a copied cookie is worthless
after sign-out or expiry. Admins are the addresses in `ADMIN_EMAILS`, decided on every request
so that a change of that list takes effect without signing out. Every HTML form is
CSRF-protected (Flask-WTF); the bearer-token JSON API is exempt, since browsers cannot send its
credentials by themselves (the webhook is served in front of Flask and checks its channel token).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import redis.exceptions
import requests
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.exc import SQLAlchemyError

from roombridge import db, people
from roombridge.queue import redis as redis_connection
from webapp.security import external_url

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()

# Blueprints that authenticate every request by other means than the session cookie. (Google's
# pushes never reach Flask: webhooks/google_calendar.py answers them in front of it.)
CSRF_EXEMPT_BLUEPRINTS = ("api",)

# The people a developer can be in AUTH_MODE=dev; the emulator's demo seed knows the same people.
DEMO_ACCOUNTS = (
    ("alice@example.com", "Alice Archer"),
    ("bob@example.com", "Bob Baker"),
    ("carol@example.com", "Carol Cooper"),
    ("admin@example.com", "Ada Admin"),
)

SESSION_USER = "user"
SESSION_ID = "sid"
SESSION_KEY = "roombridge:session:{}"  # -> the signed-in e-mail, for the session's lifetime
_OIDC_FLOW = "oidc_flow"  # {"state", "nonce", "next"} between the redirect and the callback
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")  # Google uses both forms
HTTP_TIMEOUT = 10
DISCOVERY_TTL_SECONDS = 3600
CLOCK_SKEW_SECONDS = 60


class SignInError(Exception):
    """The provider's answer cannot sign anyone in; the message is safe to show."""


@dataclass(frozen=True)
class User:
    email: str
    name: str
    is_admin: bool


def current_user() -> User | None:
    """The signed-in person of this request, or None (checked against Redis once per request)."""
    if "current_user" not in g:
        g.current_user = _session_user()
    return g.current_user


def _session_user() -> User | None:
    data = session.get(SESSION_USER)
    if not data or not data.get("email"):
        return None
    email = data["email"].lower()
    if not _session_is_live(session.get(SESSION_ID), email):
        session.clear()  # signed out elsewhere, expired, or forged: the browser drops the cookie
        return None
    admins = current_app.config["ROOMBRIDGE"].ADMIN_EMAILS
    return User(email=email, name=data.get("name") or email, is_admin=email in admins)


@contextlib.contextmanager
def _session_store(doing: str):
    """Redis, where sessions live; while it is down nobody is taken as signed in (503, not a guess)."""
    try:
        yield redis_connection()
    except redis.exceptions.RedisError:
        current_app.logger.exception("cannot %s in Redis", doing)
        abort(503, "Signing in and out is unavailable just now. Please try again shortly.")


def _session_is_live(session_id: str | None, email: str) -> bool:
    if not session_id:
        return False
    with _session_store("check the session") as store:
        owner = store.get(SESSION_KEY.format(session_id))
    return owner is not None and owner.decode() == email


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_user() is None:
            return redirect(url_for("auth.signin", next=_local_path(request.full_path)))
        return view(*args, **kwargs)

    return wrapped


def admin_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        user = current_user()
        if user is None:
            return redirect(url_for("auth.signin", next=_local_path(request.full_path)))
        if not user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def email_domain_allowed(email: str) -> bool:
    """Whether this address belongs to the organisation (any address when ALLOWED_DOMAINS is empty)."""
    allowed = _config().ALLOWED_DOMAINS
    return not allowed or email.rpartition("@")[2].lower() in allowed


def sign_in_as(email: str, name: str) -> None:
    """Start a fresh session for this person (a new session, so nothing from before carries over)."""
    email = email.strip().lower()
    session.clear()
    session_id = secrets.token_urlsafe(32)
    with _session_store("record the session") as store:
        store.set(SESSION_KEY.format(session_id), email, ex=current_app.permanent_session_lifetime)
    session.permanent = True  # the cookie expires with the Redis key, not at the browser's whim
    session[SESSION_ID] = session_id
    session[SESSION_USER] = {"email": email, "name": name.strip() or email}
    g.pop("current_user", None)
    try:
        people.remember(db.session(), email, name.strip() or email)  # someone others can now invite by name
    except SQLAlchemyError:
        # The directory of attendee suggestions is a help; a database hiccup must not refuse a sign-in.
        logging.getLogger(__name__).warning("could not record the sign-in of %s for suggestions", email, exc_info=True)


def sign_out() -> None:
    """End this session: its id is forgotten in Redis, so a copy of the cookie signs no one in."""
    session_id = session.get(SESSION_ID)
    session.clear()
    g.pop("current_user", None)
    if session_id:
        with _session_store("end the session (it expires with its lifetime)") as store:
            store.delete(SESSION_KEY.format(session_id))


def _local_path(target: str | None) -> str:
    """Only same-site paths are followed after sign-in, so /signin cannot be an open redirect."""
    if not target:
        return "/"
    target = target.rstrip("?")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _config():
    return current_app.config["ROOMBRIDGE"]


# --- routes -------------------------------------------------------------------------------------


@bp.get("/signin")
def signin():
    next_path = _local_path(request.args.get("next"))
    if current_user() is not None and not request.args.get("switch"):
        return redirect(next_path)
    config = _config()
    if config.AUTH_MODE == "dev":
        _refuse_dev_in_production()
        return render_template("signin.html", mode="dev", accounts=_dev_accounts(), next=next_path)
    if request.args.get("signed_out"):
        # Going straight back to Google would sign the person in again at once.
        return render_template("signin.html", mode="oidc", next=next_path)
    return _start_oidc(next_path)


@bp.post("/signin")
def signin_post():
    """Dev mode: sign in as the demo account picked; OIDC mode: start the provider's flow."""
    next_path = _local_path(request.form.get("next"))
    if _config().AUTH_MODE == "oidc":
        return _start_oidc(next_path)
    _refuse_dev_in_production()
    email = (request.form.get("email") or "").strip().lower()
    names = dict(DEMO_ACCOUNTS)
    if email not in names:
        flash("Choose one of the demo accounts.", "error")
        return render_template("signin.html", mode="dev", accounts=_dev_accounts(), next=next_path), 400
    if not email_domain_allowed(email):
        flash("That account is not in one of this organisation's domains.", "error")
        return render_template("signin.html", mode="dev", accounts=_dev_accounts(), next=next_path), 403
    sign_in_as(email, names[email])
    return redirect(next_path)


def _dev_accounts() -> list[tuple[str, str]]:
    return [(email, name) for email, name in DEMO_ACCOUNTS if email_domain_allowed(email)]


@bp.get("/signin/callback")
def signin_callback():
    if _config().AUTH_MODE != "oidc":
        abort(404)
    flow = session.pop(_OIDC_FLOW, None)
    try:
        if request.args.get("error"):
            raise SignInError(f"The sign-in provider said: {request.args['error']}.")
        if not flow or not secrets.compare_digest(str(request.args.get("state", "")), flow["state"]):
            raise SignInError("This sign-in link is stale or was not started here. Please try again.")
        code = request.args.get("code")
        if not code:
            raise SignInError("The sign-in provider sent no authorization code.")
        claims = exchange_code(code, nonce=flow["nonce"], redirect_uri=_redirect_uri())
    except SignInError as exc:
        current_app.logger.warning("sign-in refused: %s", exc)
        return render_template("signin.html", mode="oidc", next="/", error=str(exc)), 400
    sign_in_as(claims["email"], claims.get("name") or claims["email"])
    return redirect(_local_path(flow.get("next")))


@bp.post("/signout")
def signout():
    sign_out()
    return redirect(url_for("auth.signin", signed_out=1))


def _refuse_dev_in_production() -> None:
    # Config.validated already refuses this combination; a hand-built Config must not slip by.
    if _config().production:
        abort(404)


# --- OpenID Connect -----------------------------------------------------------------------------


def _redirect_uri() -> str:
    return external_url("auth.signin_callback")


def _start_oidc(next_path: str):
    config = _config()
    if not config.OIDC_CLIENT_ID:
        abort(503, "OIDC_CLIENT_ID is not configured")
    try:
        provider = discovery(config.OIDC_ISSUER)
    except SignInError as exc:
        return render_template("signin.html", mode="oidc", next=next_path, error=str(exc)), 503
    flow = {"state": secrets.token_urlsafe(24), "nonce": secrets.token_urlsafe(24), "next": next_path}
    session[_OIDC_FLOW] = flow
    params = {
        "response_type": "code",
        "client_id": config.OIDC_CLIENT_ID,
        "redirect_uri": _redirect_uri(),
        "scope": "openid email profile",
        "state": flow["state"],
        "nonce": flow["nonce"],
    }
    if config.ALLOWED_DOMAINS:
        # Only a hint for Google's account chooser ("*": any Workspace account); the ID token's
        # hd claim is what is checked, since anyone can edit this URL.
        domains = sorted(config.ALLOWED_DOMAINS)
        params["hd"] = domains[0] if len(domains) == 1 else "*"
    query = urlencode(params)
    return redirect(f"{provider['authorization_endpoint']}?{query}")


class _Provider:
    def __init__(self, document: dict[str, Any], fetched_at: float):
        self.document = document
        self.fetched_at = fetched_at
        self.jwks = jwt.PyJWKClient(document["jwks_uri"], timeout=HTTP_TIMEOUT, lifespan=DISCOVERY_TTL_SECONDS)


_providers: dict[str, _Provider] = {}
_providers_lock = threading.Lock()


def _provider(issuer: str) -> _Provider:
    issuer = issuer.rstrip("/")
    with _providers_lock:
        cached = _providers.get(issuer)
        if cached is not None and time.monotonic() - cached.fetched_at < DISCOVERY_TTL_SECONDS:
            return cached
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SignInError("The sign-in provider cannot be reached just now. Please try again shortly.") from exc
    missing = {"authorization_endpoint", "token_endpoint", "jwks_uri", "issuer"} - set(document)
    if missing:
        raise SignInError(f"The sign-in provider's discovery document lacks {', '.join(sorted(missing))}.")
    provider = _Provider(document, time.monotonic())
    with _providers_lock:
        _providers[issuer] = provider
    return provider


def discovery(issuer: str) -> dict[str, Any]:
    """The provider's discovery document, cached for an hour."""
    return _provider(issuer).document


def exchange_code(code: str, *, nonce: str, redirect_uri: str) -> dict[str, Any]:
    """Trade an authorization code for an ID token and return its verified claims."""
    config = _config()
    provider = _provider(config.OIDC_ISSUER)
    try:
        response = requests.post(
            provider.document["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": config.OIDC_CLIENT_ID,
                "client_secret": config.OIDC_CLIENT_SECRET,
            },
            headers={"Accept": "application/json"},
            timeout=HTTP_TIMEOUT,
        )
    except requests.RequestException as exc:
        raise SignInError("The sign-in provider cannot be reached just now. Please try again shortly.") from exc
    if response.status_code != 200:
        try:
            error = response.json().get("error", "error")
        except ValueError:
            error = f"HTTP {response.status_code}"
        raise SignInError(f"The sign-in provider refused the code ({error}).")
    id_token = response.json().get("id_token")
    if not id_token:
        raise SignInError("The sign-in provider sent no ID token.")
    return verify_id_token(id_token, nonce=nonce)


def verify_id_token(id_token: str, *, nonce: str) -> dict[str, Any]:
    """Check signature, issuer, audience, expiry and nonce; return the claims of a verified email."""
    config = _config()
    provider = _provider(config.OIDC_ISSUER)
    issuer = provider.document["issuer"]
    issuers = list(GOOGLE_ISSUERS) if issuer in GOOGLE_ISSUERS else [issuer]
    try:
        key = provider.jwks.get_signing_key_from_jwt(id_token)
        claims = jwt.decode(
            id_token,
            key.key,
            algorithms=["RS256"],
            audience=config.OIDC_CLIENT_ID,
            issuer=issuers,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.PyJWKClientConnectionError as exc:
        raise SignInError("The sign-in provider's keys cannot be fetched just now. Please try again.") from exc
    except jwt.PyJWTError as exc:
        raise SignInError(f"The ID token was refused: {exc}.") from exc
    if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise SignInError("The ID token was refused: its nonce does not match this sign-in.")
    if not claims.get("email") or claims.get("email_verified") is not True:
        raise SignInError("The sign-in provider did not vouch for an e-mail address.")
    check_organisation(claims, config.ALLOWED_DOMAINS)
    return claims


def check_organisation(claims: dict[str, Any], allowed_domains: frozenset[str]) -> None:
    """Refuse anyone but the organisation's people: a Workspace account (Google's `hd` claim) of
    an allowed domain, whose e-mail is in an allowed domain too.

    `hd` is absent for consumer accounts, including a personal Google account made with a work
    address, so the e-mail's domain alone proves nothing. With no ALLOWED_DOMAINS (development
    only; production refuses to start) anyone with a verified e-mail gets in.
    """
    if not allowed_domains:
        return
    hosted_domain = str(claims.get("hd") or "").lower()
    email_domain = str(claims["email"]).rpartition("@")[2].lower()
    if hosted_domain not in allowed_domains:
        raise SignInError("Sign in with your organisation's Google account; "
                          f"{claims['email']} is not one of its accounts.")
    if email_domain not in allowed_domains:
        raise SignInError(f"{claims['email']} is not an address of this organisation.")


# --- wiring -------------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Register the blueprint and CSRF protection; call after every other blueprint is registered."""
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    csrf.init_app(app)
    for blueprint in app.blueprints.values():
        if blueprint.name in CSRF_EXEMPT_BLUEPRINTS or (blueprint.url_prefix or "").startswith("/api"):
            csrf.exempt(blueprint)
    app.register_blueprint(bp)

    @app.context_processor
    def _user():
        return {"current_user": current_user()}

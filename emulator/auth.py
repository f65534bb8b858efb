"""Service-account keys and the OAuth 2.0 JWT-bearer grant (RFC 7523), as Google runs it.

Followed from Google's "Using OAuth 2.0 for Server to Server Applications":
- ``POST /token`` with ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and an
  RS256-signed ``assertion`` whose claims are ``iss`` (the client_email), ``scope``
  (space-separated), ``aud`` (``https://oauth2.googleapis.com/token``; google-auth always sends
  that even when the key's token_uri points elsewhere, so the emulator's own /token URL is
  accepted too), ``iat``, ``exp`` (at most one hour after iat) and optional ``sub`` (the user
  to act as under domain-wide delegation). ``kid`` in the header names the private_key_id.
- Answers ``{"access_token", "expires_in", "token_type": "Bearer"}``; failures are
  ``invalid_grant`` (bad signature, bad times, unknown account), ``invalid_scope`` and, for a
  ``sub`` the account may not impersonate, 401 ``unauthorized_client``.

The assertion's iat/exp are checked against real time, not the emulated clock: the signer
(google-auth) uses the real clock, and tests that advance the emulated clock must still be
able to get tokens. Access tokens themselves expire on the emulated clock.
"""

import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import OAuthError

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CALENDAR_SCOPES = frozenset({
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.events",
})
# Google's allowance for clock skew between the signer and its servers.
CLOCK_SKEW_SECONDS = 300
MAX_ASSERTION_LIFETIME = 3600


def new_key_pair():
    """A fresh RSA key: (private PEM for the key file, public key object to verify with)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, private_key.public_key()


def project_of(service_account_email):
    """The Cloud project a service account belongs to: ``name@PROJECT.iam.gserviceaccount.com``."""
    if "@" not in service_account_email:
        return "emulator"
    return service_account_email.split("@", 1)[1].split(".", 1)[0]


def key_file(email, private_key_pem, private_key_id, client_id, token_uri):
    """The JSON key Google's console hands out for a service account."""
    project_id = project_of(email)
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": private_key_id,
        "private_key": private_key_pem,
        "client_email": email,
        "client_id": client_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
        + email.replace("@", "%40"),
        "universe_domain": "googleapis.com",
    }


def new_key_id():
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


def verify_assertion(form, accounts, own_token_url):
    """Check a JWT-bearer grant request; return (account, scopes, subject).

    ``accounts`` maps client_email to an object with ``public_keys`` ({kid: key}) and
    ``delegation`` (bool).
    """
    if form.get("grant_type") != JWT_BEARER:
        raise OAuthError(400, "unsupported_grant_type", "Invalid grant_type: "
                         + str(form.get("grant_type")))
    assertion = form.get("assertion")
    if not assertion:
        raise OAuthError(400, "invalid_request", "Missing required parameter: assertion")
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise OAuthError(400, "invalid_grant", "Invalid JWT: malformed assertion.") from None
    account = accounts.get(claims.get("iss"))
    if account is None:
        raise OAuthError(400, "invalid_grant", "Invalid grant: account not found")
    kid = header.get("kid")
    if kid is not None and kid not in account.public_keys:
        raise OAuthError(400, "invalid_grant", "Invalid JWT Signature.")
    keys = [account.public_keys[kid]] if kid is not None else list(account.public_keys.values())
    for key in keys:
        try:
            jwt.decode(assertion, key, algorithms=["RS256"],
                       audience=[GOOGLE_TOKEN_AUDIENCE, own_token_url],
                       options={"verify_exp": False, "verify_iat": False})
            break
        except jwt.InvalidAudienceError:
            raise OAuthError(400, "invalid_grant", "Invalid JWT: audience mismatch.") from None
        except jwt.PyJWTError:
            continue
    else:
        raise OAuthError(400, "invalid_grant", "Invalid JWT Signature.")
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if (not isinstance(iat, (int, float)) or not isinstance(exp, (int, float))
            or iat > now + CLOCK_SKEW_SECONDS or exp < now - CLOCK_SKEW_SECONDS
            or exp - iat > MAX_ASSERTION_LIFETIME or exp <= iat):
        raise OAuthError(400, "invalid_grant",
                         "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                         "reasonable timeframe. Check your iat and exp values in the JWT claim.")
    scopes = frozenset((claims.get("scope") or "").split())
    if not scopes:
        raise OAuthError(400, "invalid_scope",
                         "Invalid OAuth scope or ID token audience provided.")
    subject = claims.get("sub")
    if subject == claims.get("iss"):
        subject = None
    if subject and not account.delegation:
        raise OAuthError(401, "unauthorized_client",
                         "Client is unauthorized to retrieve access tokens using this method, "
                         "or client not authorized for any of the scopes requested.")
    return account, scopes, subject

"""Web hardening: the public address behind a proxy, body size, and the headers of every answer.

- `PUBLIC_BASE_URL` is the address people use; it builds the OIDC redirect URI and absolute
  links, whatever Host the proxy sends. `PROXY_FIX_HOPS` trusts that many proxies'
  X-Forwarded-For/Proto/Host/Port/Prefix (werkzeug's ProxyFix), so a TLS-terminating load
  balancer's `https` reaches url_for and the secure cookie. Never more hops than there are
  proxies: each trusted hop is a header a client could forge.
- `MAX_CONTENT_LENGTH` bounds every body. A chunked body has no Content-Length to check, and
  werkzeug (3.1) then reads it only up to the limit and silently drops the rest, so a JSON
  body would be cut, not refused: `SizedChunkedBodies` reads at most one byte past the limit
  and hands Flask a sized body, which werkzeug refuses with 413 when it is too long.
- The headers are set after every request, errors and static files included.
- Text the database cannot store (NUL characters, lone surrogates: roombridge/text.py) is refused
  before any handler runs, in one place (`refuse_unstorable_text`): the API answers 422 naming
  each field (JSON body and query string), a page answers 422 naming the form field.
- Google's pushes are answered in front of all this (webhooks/google_calendar.py `PushReceiver`,
  mounted by create_app): they carry the same headers (`answer_headers`), their size is bounded
  the same, and the receiver checks their headers' text itself (400, counted).
"""

from __future__ import annotations

import io

from flask import Flask, current_app, jsonify, render_template, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

from roombridge import text
from roombridge.config import Config

MAX_BODY_BYTES = 256 * 1024

# No inline script anywhere (script-src 'self'): pages load their JS from /static. Inline style
# attributes are allowed (style-src-attr) for the widths of the availability bars; they cannot
# run code. No form-action: the sign-in form's POST redirects to Google.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "style-src-attr 'unsafe-inline'",
    "img-src 'self' data:",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Same-site pages get the full URL; other sites the origin only, never a path or query.
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
HSTS = "max-age=31536000"  # a year; not includeSubDomains: the customer's other hosts are not ours


def external_url(endpoint: str, **values) -> str:
    """An absolute URL for `endpoint`: on PUBLIC_BASE_URL when set, else on this request's host."""
    base = current_app.config["ROOMBRIDGE"].PUBLIC_BASE_URL
    if base:
        return base.rstrip("/") + url_for(endpoint, **values)
    return url_for(endpoint, _external=True, **values)


class SizedChunkedBodies:
    """WSGI middleware: a chunked request body becomes one with a Content-Length, read into memory
    up to `limit` + 1 bytes, so MAX_CONTENT_LENGTH refuses it like any other oversized body."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    def __call__(self, environ, start_response):
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            stream, body = environ["wsgi.input"], bytearray()
            while len(body) <= self.limit:
                chunk = stream.read(self.limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
            environ["wsgi.input"] = io.BytesIO(bytes(body))
            environ["CONTENT_LENGTH"] = str(len(body))  # over the limit: werkzeug answers 413
            environ.pop("HTTP_TRANSFER_ENCODING")
            environ.pop("wsgi.input_terminated", None)
        return self.app(environ, start_response)


def answer_headers(config: Config) -> dict[str, str]:
    """The headers every answer carries (the push receiver's too, webhooks/google_calendar.py)."""
    headers = dict(SECURITY_HEADERS)
    if config.production:
        headers["Strict-Transport-Security"] = HSTS
    return headers


def init_app(app: Flask, config: Config) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.wsgi_app = SizedChunkedBodies(app.wsgi_app, MAX_BODY_BYTES)
    if config.PROXY_FIX_HOPS:
        hops = config.PROXY_FIX_HOPS
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops)
    if config.PUBLIC_BASE_URL.startswith("https://"):
        app.config["PREFERRED_URL_SCHEME"] = "https"
    headers = answer_headers(config)

    @app.after_request
    def _security_headers(response):
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response


def refuse_unstorable_text(app: Flask) -> None:
    """Install the check of every request's text (after CSRF's, so a forged form is still a 400)."""

    @app.before_request
    def _refuse_unstorable_text():
        # By path, not blueprint: a request that matched no route (an id out of range, say) has no
        # blueprint, and under /api/v1 its answer must still be JSON.
        api = request.path.startswith("/api/v1/")
        pairs = list(request.args.items(multi=True))
        if api:
            body = request.get_json(silent=True) if request.is_json else None
            pairs += list(body.items()) if isinstance(body, dict) else [("_schema", body)]
        else:
            pairs += list(request.form.items(multi=True))
        fields = text.unstorable_fields(pairs)
        if not fields:
            return None
        if api:
            return jsonify(error="invalid", errors={name: [text.MESSAGE] for name in fields}), 422
        named = ", ".join(f"“{name}”" for name in fields)
        return render_template("error.html", title="Text that cannot be kept",
                               message=f"The field {named} holds a NUL character or broken Unicode, which "
                                       "cannot be stored. Go back and type it again without it."), 422

"""Test-client helpers for the HTML pages: CSRF tokens and dev-mode sign-in (for any engineer's tests)."""

from __future__ import annotations

import re

_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_token(client, path: str = "/signin?switch=1") -> str:
    """The CSRF token of this client's session, read from a page as a browser would."""
    page = client.get(path)
    match = _META.search(page.get_data(as_text=True))
    assert match, f"no csrf-token meta tag on {path} ({page.status_code})"
    return match.group(1)


def sign_in(client, email: str = "alice@example.com") -> None:
    """Sign in through the dev-mode account picker (AUTH_MODE=dev, the test default)."""
    response = client.post("/signin", data={"email": email, "csrf_token": csrf_token(client), "next": "/"})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]

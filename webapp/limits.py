"""The rate limit on booking writes, per person: Flask-Limiter on our Redis.

Bookings, edits and cancellations through the pages and the API share one budget per person,
BOOKING_WRITES_PER_MINUTE (a moving minute, kept in Redis under REDIS_URL, so every web
process counts together). Admins are exempt. A refusal answers 429 with `Retry-After`: JSON
in the API's error shape, a page saying when to try again on the pages; the domain's own
rate limit (invitation mails an hour, roombridge/booking/quotas.py) answers the same way.
Who met a limit is noted in Redis for the admin console. If Redis does not answer, writes
go ahead (the booking itself survives a Redis outage; the counter is not worth refusing it).
Each app gets a Limiter of its own (Flask-Limiter keeps its storage on the instance), over
the views marked `@booking_writes`.
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, g, jsonify, render_template, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded

from roombridge.booking import quotas
from webapp.auth import current_user

LIMIT_NAME = "booking writes per minute"


def _person() -> str:
    if request.blueprint == "api":
        return g.get("api_user") or request.remote_addr or "-"
    user = current_user()
    return user.email if user else request.remote_addr or "-"


def _is_admin() -> bool:
    if request.blueprint == "api":
        return bool(g.get("api_admin"))
    user = current_user()
    return bool(user and user.is_admin)


def _per_minute() -> str:
    return f"{current_app.config['ROOMBRIDGE'].BOOKING_WRITES_PER_MINUTE} per minute"


def _note_breach(limit: RequestLimit) -> None:
    quotas.record_hit(_person(), LIMIT_NAME)


LIMITER_KEY = "roombridge.limiter"


def booking_writes(view):
    """Mark a view that books, edits or cancels: `init_app` puts it under the app's shared budget."""
    view.booking_write = True
    return view


def init_app(app: Flask) -> None:
    """A Limiter of the app's own (its storage is the app's REDIS_URL), over every marked view."""
    limiter = Limiter(key_func=_person, app=app, storage_uri=app.config["ROOMBRIDGE"].REDIS_URL,
                      strategy="moving-window", key_prefix="roombridge:ratelimit", swallow_errors=True,
                      on_breach=_note_breach)
    app.extensions[LIMITER_KEY] = limiter
    shared = limiter.shared_limit(_per_minute, scope="booking-writes", exempt_when=_is_admin,
                                  error_message=_per_minute)
    for endpoint, view in list(app.view_functions.items()):
        if getattr(view, "booking_write", False):
            app.view_functions[endpoint] = shared(view)
    app.register_error_handler(RateLimitExceeded, _too_many_writes)
    app.register_error_handler(quotas.RateLimited, _too_many_invitations)


def _too_many_writes(error: RateLimitExceeded):
    limit = current_app.extensions[LIMITER_KEY].current_limit
    reset_at = limit.reset_at if limit else time.time() + 60
    wait = min(60, max(1, math.ceil(reset_at - time.time())))  # a moving minute: never longer
    return _refuse(f"You booked, changed or cancelled more than {error.description}. "
                   f"Try again in {wait} seconds.", wait)


def _too_many_invitations(error: quotas.RateLimited):
    return _refuse(str(error), error.retry_after)


def _refuse(message: str, retry_after: int):
    headers = {"Retry-After": str(retry_after)}
    if request.blueprint == "api":
        return jsonify(error="rate_limited", message=message, retry_after=retry_after), 429, headers
    return render_template("error.html", title="Too many changes", message=message), 429, headers

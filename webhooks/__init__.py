"""Google Calendar push notifications: verify, record, enqueue, acknowledge."""

from flask import Blueprint

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

from webhooks import google_calendar  # noqa: E402,F401  (registers the routes on bp)

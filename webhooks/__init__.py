"""Google Calendar push notifications: verify, record, enqueue, acknowledge."""

from flask import Blueprint

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

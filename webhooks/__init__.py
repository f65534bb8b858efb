"""Google Calendar push notifications: verify, record, enqueue, acknowledge.

Served as plain WSGI in front of the Flask app (`google_calendar.PushReceiver`), not as a blueprint.
"""

from webhooks.google_calendar import PushReceiver

__all__ = ["PushReceiver"]

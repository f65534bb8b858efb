"""Jobs of check-in: the periodic release of no-shows, and the organiser's notices.

Thin: the rules, and the guarantee that a reservation is released once however many runs
overlap, live in roombridge/checkin.py.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import UTC, datetime

from flask import current_app
from rq import Retry

from jobs import job
from roombridge import checkin, db, invitations

log = logging.getLogger(__name__)


@job("default", timeout=300)
def release_no_shows(now: datetime | None = None) -> dict[str, int]:
    """Release (or flag) every reservation past its check-in deadline with no check-in."""
    outcomes = checkin.release_no_shows(db.session(), current_app.config["ROOMBRIDGE"], now or datetime.now(UTC))
    if outcomes:
        log.info("check-in deadlines: %s", outcomes)
    return outcomes


def on_checkin_notice_due(event: checkin.CheckinNoticeDue) -> None:
    send_checkin_notice.enqueue(event.reservation_id, event.kind)


@job("default", timeout=60, retry=Retry(max=5, interval=[10, 60, 300, 900, 3600]))
def send_checkin_notice(reservation_id: int, kind: str) -> str:
    try:
        return invitations.mail_checkin_notice(db.session(), current_app.config["ROOMBRIDGE"], reservation_id, kind)
    except (OSError, smtplib.SMTPException):
        log.warning("could not mail the %s notice of reservation %s; will retry", kind, reservation_id, exc_info=True)
        raise

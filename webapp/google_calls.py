"""The Google call log in the admin console: a summary with the least-privilege line, and each room's calls.

Handlers read the query and call roombridge.call_log. The summary's window is chosen from a few
(the last hour, day or week: each calls scanned costs, benchmarks/call_log.py); a room's page
shows everything kept, newest first, through its index, filtered by kind and outcome, 50 a page.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort, current_app, render_template, request
from redis.exceptions import RedisError

from roombridge import call_log, db
from roombridge.call_budget import KINDS
from roombridge.call_log import OUTCOMES, CallLog
from roombridge.config import CALENDAR_EVENTS_SCOPE
from roombridge.db import utcnow
from roombridge.models import Room
from roombridge.queue import redis
from webapp import admin
from webapp.auth import admin_required

bp = Blueprint("google_calls", __name__, url_prefix="/admin")
bp.register_error_handler(403, admin.admins_only)

PER_PAGE = 50
TOP_ROOMS = 20
DEFAULT_HOURS = 24
MAX_WINDOW_HOURS = 24 * 7


def _windows() -> list[tuple[int, str]]:
    """The summary's windows, in hours, and their names: a week at most (a second of PostgreSQL per ~1M calls)."""
    kept = current_app.config["ROOMBRIDGE"].GOOGLE_CALL_LOG_RETENTION_DAYS * 24
    windows = [(1, "Last hour"), (24, "Last 24 hours"), (MAX_WINDOW_HOURS, "Last 7 days")]
    shorter = [w for w in windows if w[0] < kept]
    return shorter if kept > MAX_WINDOW_HOURS else [*shorter, (kept, f"Everything kept ({kept // 24} days)")]


def _waiting() -> int | None:
    """Records still in Redis, not yet in the table (None: Redis did not answer)."""
    try:
        return CallLog(redis()).waiting()
    except RedisError:
        return None


@bp.get("/google-calls")
@admin_required
def summary():
    windows = _windows()
    hours = request.args.get("hours", type=int)
    if hours not in {w[0] for w in windows}:
        hours = DEFAULT_HOURS
    session, now = db.session(), utcnow()
    found = call_log.summary(session, now - timedelta(hours=hours), top=TOP_ROOMS)
    config = current_app.config["ROOMBRIDGE"]
    return render_template("admin/google_calls.html", found=found, hours=hours, windows=windows, now=now,
                           scope=CALENDAR_EVENTS_SCOPE, config=config, waiting=_waiting(),
                           service_account=admin.service_account_email(), outcomes=OUTCOMES)


@bp.get("/rooms/<id:room_id>/google-calls")
@admin_required
def room_calls(room_id: int):
    session = db.session()
    room = session.get(Room, room_id)
    if room is None:
        abort(404)
    kind = request.args.get("kind") if request.args.get("kind") in KINDS else None
    outcome = request.args.get("outcome") if request.args.get("outcome") in OUTCOMES else None
    page = min(max(request.args.get("page", 1, type=int), 1), 10_000)
    found = call_log.room_calls(session, room.id, kind=kind, outcome=outcome, page=page, per_page=PER_PAGE)
    return render_template("admin/room_google_calls.html", room=room, found=found, kind=kind, outcome=outcome,
                           kinds=KINDS, outcomes=OUTCOMES, now=utcnow(), waiting=_waiting(),
                           retention_days=current_app.config["ROOMBRIDGE"].GOOGLE_CALL_LOG_RETENTION_DAYS)

"""The admins' Insights page (charts as server-rendered SVG, a table, a CSV) and the lobby overview.

Handlers only read the query, call roombridge.insights and render. The CSV carries the same
per-room figures as `GET /api/v1/insights` (`Figures.as_dict`), one column per source.

The lobby overview (`/lobby?building=...`) is a signed-in page: it shows only free/busy and
"until when" (never titles or organisers), so any signed-in employee may open it, and a
lobby screen signs in like a person. A screen signed in with a person's account is that
person's session on a public screen, which is why it shows nothing but free/busy; a secret
per-building link like the room displays' is the better fit for unattended screens (not built).
Its JS (static/lobby.js) polls `/lobby/status.json` with If-None-Match.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import Blueprint, Response, abort, jsonify, render_template, request

from roombridge import db, insights
from roombridge.models import LIVE_STATUSES, Reservation, Room
from webapp.auth import admin_required, login_required

bp = Blueprint("insights", __name__)

TABLE_ROWS = 200  # the page's table; the CSV and the API carry every room
CSV_COLUMNS = ("room_id", "calendar_id", "name", "building", "floor", "capacity", "bookings", "booked_hours",
               "checked_in_hours", "released_hours", "ended_early_hours", "no_show_rate", "average_people",
               *(f"source_{s}" for s in insights.SOURCES))


def figures_for(session, args) -> insights.Insights:
    """The Insights of query arguments (start, end, building, floor, room); InvalidRange on a bad range."""
    start, end = insights.parse_range(args.get("start"), args.get("end"), datetime.now(UTC).date())
    room = (args.get("room") or "").strip()
    room_ids = None
    if room:
        found = session.scalar(sa.select(Room.id).where(
            sa.or_(sa.func.lower(Room.calendar_id) == room.lower(),
                   Room.id == (int(room) if room.isdigit() and len(room) < 18 else -1))))
        room_ids = [found] if found is not None else []
    return insights.compute(session, start, end, building=args.get("building") or None,
                            floor=args.get("floor") or None, room_ids=room_ids)


def figures_from_query(session) -> insights.Insights:
    """The Insights of the page's query; 400 on a bad range."""
    try:
        return figures_for(session, request.args)
    except insights.InvalidRange as exc:
        abort(400, str(exc))


def csv_rows(found: insights.Insights) -> list[dict]:
    rows = []
    for figures in found.rooms:
        data = figures.as_dict()
        sources = data.pop("sources")
        rows.append({**data, **{f"source_{s}": n for s, n in sources.items()}})
    return rows


def heat_cells(occupancy: list[list[float]]) -> list[list[tuple[float, str, bool]]]:
    """Each heatmap cell's (percent, fill, dark): two ramps, light under dark text and dark under white
    text, so every number keeps a 4.5:1 contrast (no shade in between would, for either text colour)."""
    peak = max((max(row) for row in occupancy), default=0.0) or 1.0

    def fill(level: float) -> tuple[str, bool]:
        if level <= 0.5:
            t = level / 0.5
            return f"rgb({244 - 87 * t:.0f},{245 - 65 * t:.0f},{247 - 23 * t:.0f})", False
        t = (level - 0.5) / 0.5
        return f"rgb({58 - 43 * t:.0f},{95 - 48 * t:.0f},{168 - 58 * t:.0f})", True

    return [[(value, *fill(value / peak)) for value in row] for row in occupancy]


@bp.get("/admin/insights")
@admin_required
def insights_page():
    session = db.session()
    found = figures_from_query(session)
    ranked = sorted(found.rooms, key=lambda f: f.booked_hours, reverse=True)
    return render_template(
        "admin/insights.html", found=found, rooms=ranked[:TABLE_ROWS], more=max(0, len(ranked) - TABLE_ROWS),
        weekdays=insights.WEEKDAYS, cells=heat_cells(found.occupancy), buildings=insights.buildings(session),
        floors=insights.floors(session, request.args.get("building") or None), args=request.args,
        oversized=[f for f in ranked if f.oversized][:10],
    )


@bp.get("/admin/insights.csv")
@admin_required
def insights_csv():
    found = figures_from_query(db.session())
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(found))
    name = f"roombridge-insights-{found.start}-{found.end}.csv"
    return Response(out.getvalue(), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# --- the lobby overview ------------------------------------------------------------------------


def _lobby_state(session, building: str | None, now: datetime) -> dict:
    query = sa.select(Room).where(Room.in_scope.is_(True))
    if building:
        query = query.where(Room.building == building)
    rooms = list(session.scalars(query.order_by(Room.floor, Room.name)))
    ids = [r.id for r in rooms]
    # Today's live bookings of these rooms from now on, in one query; "busy until" follows
    # back-to-back bookings, so a room booked 10-11 and 11-12 is busy until 12.
    upcoming: dict[int, list[tuple[datetime, datetime]]] = {i: [] for i in ids}
    if ids:
        rows = session.execute(
            sa.select(Reservation.room_id, Reservation.start_at, Reservation.end_at)
            .where(Reservation.room_id.in_(ids), Reservation.status.in_(LIVE_STATUSES),
                   Reservation.end_at > now, Reservation.start_at < now + timedelta(hours=24))
            .order_by(Reservation.start_at)
        )
        for room_id, start_at, end_at in rows:
            upcoming[room_id].append((start_at, end_at))
    shown = []
    for room in rooms:
        busy_until, next_start = None, None
        for start_at, end_at in upcoming[room.id]:
            if busy_until is None and start_at > now:
                next_start = start_at
                break
            if busy_until is not None and start_at > busy_until:
                break
            busy_until = max(busy_until or end_at, end_at)
        zone = room.zone
        shown.append({
            "id": room.id, "name": room.name, "floor": room.floor or "", "capacity": room.capacity,
            "busy": busy_until is not None,
            "until": until.astimezone(zone).strftime("%H:%M") if (until := busy_until or next_start) else None,
        })
    return {"building": building or "All buildings", "rooms": shown,
            "as_of": now.strftime("%H:%M") + " UTC"}


def _etag(state: dict) -> str:
    without_clock = {k: v for k, v in state.items() if k != "as_of"}
    return hashlib.sha256(json.dumps(without_clock, sort_keys=True).encode()).hexdigest()[:32]


@bp.get("/lobby")
@login_required
def lobby():
    building = request.args.get("building") or None
    session = db.session()
    state = _lobby_state(session, building, datetime.now(UTC))
    return render_template("lobby.html", state=state, building=building, buildings=insights.buildings(session))


@bp.get("/lobby/status.json")
@login_required
def lobby_status():
    state = _lobby_state(db.session(), request.args.get("building") or None, datetime.now(UTC))
    tag = _etag(state)
    if request.if_none_match.contains(tag):
        return Response(status=304, headers={"ETag": f'"{tag}"', "Cache-Control": "no-cache"})
    response = jsonify(state)
    response.headers["ETag"] = f'"{tag}"'
    response.headers["Cache-Control"] = "no-cache"
    return response

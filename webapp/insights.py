"""The admins' Insights page (charts as server-rendered SVG, a table, a CSV) and the lobby overview.

Handlers only read the query, call roombridge.insights and render. The CSV carries the same
per-room figures as `GET /api/v1/insights` (`Figures.as_dict`), one column per source.

The lobby overview (`/lobby?building=...`) is a signed-in page: it shows only free/busy and
"until when" (never titles or organisers), so any signed-in employee may open it. An
unattended lobby screen opens its building's secret link instead (webapp/display.py), so no
person's session is left on a public screen. Its JS (static/lobby.js) polls the status URL
with If-None-Match.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Blueprint, Response, abort, render_template, request, url_for

from roombridge import db, displays, insights
from roombridge.models import Room
from webapp.auth import admin_required, login_required
from webapp.display import lobby_status_response

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


# --- the lobby overview, signed in (a lobby screen's own secret link: webapp/display.py) ------------


@bp.get("/lobby")
@login_required
def lobby():
    building = request.args.get("building") or None
    session = db.session()
    state = displays.lobby_board(session, building, datetime.now(UTC))
    status_url = url_for("insights.lobby_status", building=building) if building else url_for("insights.lobby_status")
    return render_template("lobby.html", state=state, building=building, buildings=insights.buildings(session),
                           status_url=status_url)


@bp.get("/lobby/status.json")
@login_required
def lobby_status():
    return lobby_status_response(displays.lobby_board(db.session(), request.args.get("building") or None,
                                                      datetime.now(UTC)))

"""The room display and the lobby screen, each opened by its secret link, no sign-in.

A room display (`/display/<token>`) shows one room's door page and acts for that room; a
lobby screen (`/display/lobby/<token>`) shows one building's overview and does nothing else.

Thin: the link is looked up (roombridge/displays.py), the rules run in the core, the page is
rendered here. Every route takes the link and acts for its room only: a reservation of
another room is "not found", and nothing here reaches any other page (the display holds no
session). The page polls `state.json` with If-None-Match (static/display.js) and reloads
only when what it shows has changed; a revoked link answers 404 everywhere.

CSRF protection is off for this blueprint on purpose: the credential is the secret in the
URL, which a forging site cannot know, not a cookie the browser would send along.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, current_app, jsonify, redirect, render_template, request, url_for

from roombridge import booking, checkin, db, displays
from roombridge.models import Room
from webapp.auth import csrf

bp = Blueprint("display", __name__, url_prefix="/display")
csrf.exempt(bp)

POLL_SECONDS = 20  # three requests a minute per display, nearly all answered 304


def _room(token: str) -> Room:
    room = displays.room_of(db.session(), token)
    if room is None:
        abort(404)
    return room


def _state(room: Room) -> tuple[displays.Board, str]:
    state = displays.board(db.session(), current_app.config["ROOMBRIDGE"], room)
    etag = hashlib.sha256(json.dumps(state.as_dict(), sort_keys=True).encode()).hexdigest()[:32]
    return state, etag


@bp.after_request
def _private(response):
    # The URL is the secret: never sent on as a referrer, never kept by a shared cache.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-cache, private")
    return response


def _page(token: str, room: Room, message: str | None = None, status: int = 200):
    state, etag = _state(room)
    return render_template("display.html", token=token, board=state, etag=etag, message=message,
                           poll_seconds=POLL_SECONDS, zone_name=room.time_zone), status


@bp.get("/<token>")
def page(token: str):
    return _page(token, _room(token))


@bp.get("/<token>/state.json")
def state(token: str):
    room = _room(token)
    board, etag = _state(room)
    response = jsonify(board.as_dict())
    response.set_etag(etag)
    return response.make_conditional(request)  # 304 with no body when If-None-Match holds the tag


def _act(token: str, action):
    """Run one of the room's actions; a refusal is shown on the page, success goes back to it."""
    room = _room(token)
    try:
        action(room)
    except booking.InvalidBooking as exc:
        return _page(token, room, " ".join(m for messages in exc.errors.values() for m in messages), 422)
    except booking.Conflict:
        return _page(token, room, "The room is no longer free for that long.", 409)
    except booking.NotAllowed as exc:
        return _page(token, room, str(exc), 403)
    except booking.NotFound:
        abort(404)
    return redirect(url_for("display.page", token=token), 303)


def _reservation_id() -> int:
    value = request.form.get("reservation_id", type=int)
    if value is None:
        abort(404)
    return value


@bp.post("/<token>/book")
def book(token: str):
    minutes = request.form.get("minutes", type=int) or 0
    return _act(token, lambda room: displays.book_now(db.session(), current_app.config["ROOMBRIDGE"], room, minutes))


@bp.post("/<token>/check-in")
def check_in(token: str):
    reservation_id = _reservation_id()
    return _act(token, lambda room: checkin.check_in(db.session(), current_app.config["ROOMBRIDGE"], reservation_id,
                                                     checkin.display_actor(room.id)))


@bp.post("/<token>/end-early")
def end_early(token: str):
    reservation_id = _reservation_id()
    return _act(token, lambda room: checkin.end_early(db.session(), current_app.config["ROOMBRIDGE"], reservation_id,
                                                      checkin.display_actor(room.id)))


# --- the lobby screen ---------------------------------------------------------------------------------


def lobby_status_response(state: dict) -> Response:
    """The lobby's state as JSON with an ETag of what it shows (not its clock): polling costs a 304."""
    without_clock = {k: v for k, v in state.items() if k != "as_of"}
    tag = hashlib.sha256(json.dumps(without_clock, sort_keys=True).encode()).hexdigest()[:32]
    response = jsonify(state)
    response.set_etag(tag)
    response.headers["Cache-Control"] = "no-cache"
    return response.make_conditional(request)


def _building(token: str) -> str:
    building = displays.building_of(db.session(), token)
    if building is None:
        abort(404)
    return building


@bp.get("/lobby/<token>")
def lobby(token: str):
    building = _building(token)
    state = displays.lobby_board(db.session(), building, datetime.now(UTC))
    return render_template("lobby.html", state=state, building=building, buildings=[],
                           status_url=url_for("display.lobby_status", token=token))


@bp.get("/lobby/<token>/status.json")
def lobby_status(token: str):
    return lobby_status_response(displays.lobby_board(db.session(), _building(token), datetime.now(UTC)))

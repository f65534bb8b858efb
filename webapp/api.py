"""The JSON API at /api/v1: thin handlers over roombridge.booking.

Each handler authenticates the bearer token, loads the body with a marshmallow schema,
calls the domain and shapes the answer; the domain commits and queues the Google write.
Every answer under /api/v1, refusals included (unknown paths, wrong methods, oversize or
non-JSON bodies, unexpected failures), is JSON in one shape: {"error", "message"?,
"errors"?, "clashes"?}, as webapp/openapi.py describes it.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, g, jsonify, render_template, request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)
from werkzeug.routing import BaseConverter

from roombridge import api_tokens, booking, checkin, db
from roombridge.config import Config
from roombridge.models import ReservationSource, Room
from webapp import schemas
from webapp.limits import booking_writes
from webapp.security import MAX_BODY_BYTES

bp = Blueprint("api", __name__, url_prefix="/api/v1")
# The page that renders the description; outside /api/v1, where every answer is JSON.
docs_bp = Blueprint("api_docs", __name__)

def digits_at_most(limit: int) -> str:
    """A regular expression for the decimal numbers 1..limit, without leading zeros."""
    text = str(limit)
    alternatives = [f"[1-9][0-9]{{0,{len(text) - 2}}}"] if len(text) > 1 else []
    for index, digit in enumerate(int(d) for d in text):
        lowest = 1 if index == 0 else 0
        if digit > lowest:
            alternatives.append(f"{text[:index]}[{lowest}-{digit - 1}][0-9]{{{len(text) - index - 1}}}")
    alternatives.append(text)
    return "(?:" + "|".join(alternatives) + ")"


class IdConverter(BaseConverter):
    """`<id:name>`: a positive id the database's integer can hold; anything else is no such path (404).

    Bounding ids at routing keeps 2**63 and beyond away from the database driver (SQLite raises
    OverflowError on them), for every route at once. The bound is in the pattern itself: a
    converter that refused a matched value instead would make Werkzeug answer 405 (the other
    methods' rules for the path did match).
    """

    regex = digits_at_most(schemas.MAX_ID)
    weight = 50

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(int(value))


def _config() -> Config:
    return current_app.config["ROOMBRIDGE"]


@bp.before_request
def _authenticate():
    if request.endpoint == "api.openapi":
        return None  # the description of the API is public, like any API reference
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    email = api_tokens.verify(db.session(), token.strip()) if scheme.lower() == "bearer" else None
    if email is None:
        answer = jsonify(error="unauthorized", message="Send a valid API token: Authorization: Bearer <token>.")
        return answer, 401, {"WWW-Authenticate": 'Bearer realm="roombridge"'}
    g.api_user = email
    g.api_admin = booking.is_admin(_config(), email)
    return None


def _actor() -> dict:
    return {"actor_email": g.api_user, "actor_is_admin": g.api_admin}


def _reservation_json(reservation, warnings: list[str] | None = None) -> dict:
    return schemas.reservation_json(reservation, warnings, viewer_email=g.api_user, viewer_is_admin=g.api_admin)


def _load(schema: Schema, data) -> dict:
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["Send a JSON object."]})
    return schema.load(data)


def _json_body():
    """The request's JSON document: 413 past the size limit, 415 if not JSON, 400 if not parseable."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(f"The body may be at most {MAX_BODY_BYTES} bytes.")
    if not request.is_json:
        raise UnsupportedMediaType("Send a JSON object with Content-Type: application/json.")
    data = request.get_json(silent=True)
    if data is None and request.get_data(cache=True).strip() != b"null":
        raise BadRequest("The body is not valid JSON.")
    return data


# --- errors: one JSON shape for every refusal ----------------------------------------------------


def _error(code: str, message: str, status: int, headers=None, **extra):
    return jsonify(error=code, message=message, **extra), status, headers or {}


@bp.errorhandler(ValidationError)
def _invalid(error: ValidationError):
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return jsonify(error="invalid", errors=messages), 422


@bp.errorhandler(booking.InvalidBooking)
def _invalid_booking(error: booking.InvalidBooking):
    if set(error.errors) <= {"status", "check_in"}:
        # The reservation's state (cancelled, released, already confirmed) or the clock (a check-in
        # window not yet open, or closed) refuses the change, however well-formed the request: a
        # conflict with the resource as it is now, not invalid input.
        return _error("wrong_state", " ".join(m for messages in error.errors.values() for m in messages), 409)
    return jsonify(error="invalid", errors=error.errors), 422


@bp.errorhandler(booking.Conflict)
def _conflict(error: booking.Conflict):
    clashes = [
        {"reservation_id": c.reservation_id, "start": schemas.rfc3339(c.start), "end": schemas.rfc3339(c.end),
         "title": c.title}
        for c in error.clashes
    ]
    return jsonify(error="conflict", message=str(error), clashes=clashes), 409


@bp.errorhandler(booking.NotAllowed)
def _not_allowed(error: booking.NotAllowed):
    return _error("forbidden", str(error), 403)


@bp.errorhandler(booking.NotFound)
def _not_found(error: booking.NotFound):
    return _error("not_found", str(error), 404)


def _is_api_request() -> bool:
    return request.path == bp.url_prefix or request.path.startswith(bp.url_prefix + "/")


def http_error_as_json(error: HTTPException):
    """Any HTTP error under /api/v1 as JSON (unknown paths and wrong methods too); elsewhere untouched."""
    if not _is_api_request():
        return error
    if error.code == 500:
        return _error("internal_server_error", "Something went wrong on our side; try again later.", 500)
    headers = {k: v for k, v in error.get_headers() if k.lower() in ("allow", "retry-after", "www-authenticate")}
    return _error(error.name.lower().replace(" ", "_"), error.description or error.name, error.code or 500, headers)


@bp.record_once
def _register_app_error_handlers(state) -> None:
    # Routing errors (404 for an unknown path, 405) happen before any blueprint is chosen, so
    # only an app-wide handler sees them. Flask also hands it every unhandled exception as a
    # 500 (after logging the trace), so one handler covers every status.
    app: Flask = state.app
    app.register_error_handler(HTTPException, http_error_as_json)


# --- rooms ------------------------------------------------------------------------------------


@bp.get("/rooms")
def list_rooms():
    rooms = db.session().scalars(sa.select(Room).where(Room.in_scope.is_(True)).order_by(Room.name)).all()
    return jsonify(rooms=[schemas.room_json(room) for room in rooms])


def _visible_room(room_id: int) -> Room:
    room = db.session().get(Room, room_id)
    if room is None or not room.in_scope:
        raise booking.NotFound(f"no room {room_id}")
    return room


@bp.get("/rooms/<id:room_id>/availability")
def availability(room_id: int):
    """The busy intervals of one day in the room's own time zone."""
    room = _visible_room(room_id)
    query = _load(schemas.AvailabilityQuerySchema(), request.args.to_dict())
    day: date = query["date"]
    zone = room.zone
    busy = booking.day_timeline(db.session(), [room], day)[room.id]
    return jsonify(
        room_id=room.id,
        date=day.isoformat(),
        time_zone=room.time_zone,
        busy=[
            {
                "start": schemas.rfc3339(b.start),
                "end": schemas.rfc3339(b.end),
                "start_local": b.start.astimezone(zone).isoformat(timespec="seconds"),
                "end_local": b.end.astimezone(zone).isoformat(timespec="seconds"),
                "reservation_id": b.reservation_id,
                "source": str(b.source),
            }
            for b in busy
        ],
    )


# --- reservations --------------------------------------------------------------------------------


@bp.get("/reservations")
def list_reservations():
    query = _load(schemas.ReservationQuerySchema(), request.args.to_dict())
    found = booking.list_reservations(
        db.session(), room_id=query.get("room"), start=query.get("start"), end=query.get("end"), **_actor()
    )
    return jsonify(reservations=[_reservation_json(r) for r in found])


@bp.post("/reservations")
@booking_writes
def create_reservation():
    data = _load(schemas.ReservationCreateSchema(), _json_body())
    recurrence = data.get("recurrence")
    result = booking.book(
        db.session(),
        _config(),
        booking.BookingRequest(
            room_id=data["room_id"],
            organiser_email=g.api_user,
            title=data["title"],
            start=data["start"],
            end=data["end"],
            attendees=data["attendees"],
            description=data["description"],
            recurrence=booking.Recurrence(**recurrence) if recurrence else None,
            skip_conflicts=data["skip_conflicts"],
            source=ReservationSource.API,
        ),
    )
    first = result.reservations[0]
    location = {"Location": f"{bp.url_prefix}/reservations/{first.id}"}
    if recurrence is None:
        return jsonify(_reservation_json(first, result.warnings)), 201, location
    return (
        jsonify(
            series_id=first.series_id,
            reservations=[_reservation_json(r) for r in result.reservations],
            warnings=result.warnings,
            skipped=[schemas.rfc3339(s) for s in result.skipped],
        ),
        201,
        location,
    )


@bp.get("/reservations/<id:reservation_id>")
def get_reservation(reservation_id: int):
    return jsonify(_reservation_json(booking.get(db.session(), reservation_id, **_actor())))


@bp.patch("/reservations/<id:reservation_id>")
@booking_writes
def edit_reservation(reservation_id: int):
    # Look first, so a caller who may not see it learns nothing from a 422 about the body.
    booking.get(db.session(), reservation_id, **_actor())
    scope = _load(schemas.ScopeQuerySchema(), request.args.to_dict())["scope"]
    changes = _load(schemas.ReservationPatchSchema(), _json_body())
    result = booking.edit(db.session(), _config(), reservation_id, **_actor(), **changes, scope=scope)
    return jsonify(_reservation_json(result.reservations[0], result.warnings))


@bp.delete("/reservations/<id:reservation_id>")
@booking_writes
def cancel_reservation(reservation_id: int):
    scope = _load(schemas.ScopeQuerySchema(), request.args.to_dict())["scope"]
    reservation = booking.cancel(db.session(), _config(), reservation_id, **_actor(), scope=scope)
    return jsonify(_reservation_json(reservation))


@bp.post("/reservations/<id:reservation_id>/retry")
def retry_reservation(reservation_id: int):
    """Try the Google write of a failed reservation again."""
    reservation = booking.retry_write(db.session(), reservation_id, **_actor())
    return jsonify(_reservation_json(reservation)), 202


@bp.get("/insights")
def insights():
    """Utilisation figures per room (admins): `start`, `end` (YYYY-MM-DD), optional `room`, `building`, `floor`."""
    from roombridge.insights import InvalidRange
    from webapp.insights import figures_for

    if not g.api_admin:
        raise booking.NotAllowed("insights are for admins")
    query = _load(schemas.InsightsQuerySchema(), request.args.to_dict())
    try:
        found = figures_for(db.session(), {k: v.isoformat() if isinstance(v, date) else v for k, v in query.items()})
    except InvalidRange as exc:
        raise ValidationError({"start": [str(exc)]}) from exc
    return jsonify(start=found.start.isoformat(), end=found.end.isoformat(),
                   rooms=[figures.as_dict() for figures in found.rooms], total=found.total.as_dict())


@bp.post("/reservations/<id:reservation_id>/check-in")
def check_in_reservation(reservation_id: int):
    """Check in to a meeting (organiser, attendee or admin), inside its check-in window."""
    reservation = checkin.check_in(db.session(), _config(), reservation_id, checkin.person(g.api_user, g.api_admin))
    return jsonify(_reservation_json(reservation))


@bp.get("/openapi.json")
def openapi():
    from webapp.openapi import spec

    return jsonify(spec(current_app))


@docs_bp.get("/api/docs")
def docs():
    """Swagger UI over /api/v1/openapi.json (vendored under static/swagger-ui; no CDN, no inline script)."""
    return render_template("api_docs.html")

"""The JSON API at /api/v1: thin handlers over roombridge.booking.

Each handler authenticates the bearer token, loads the body with a marshmallow schema,
calls the domain and shapes the answer; the domain commits and queues the Google write.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import HTTPException

from roombridge import api_tokens, booking, checkin, db
from roombridge.config import Config
from roombridge.models import ReservationSource, Room
from webapp import schemas

bp = Blueprint("api", __name__, url_prefix="/api/v1")

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


def _load(schema: Schema, data) -> dict:
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["Send a JSON object."]})
    return schema.load(data)


def _json_body() -> dict:
    data = request.get_json(silent=True)  # a body over MAX_CONTENT_LENGTH, chunked or not: 413
    if data is None:
        raise ValidationError({"_schema": ["Send a JSON object with Content-Type: application/json."]})
    return data


# --- errors: one JSON shape for every refusal ----------------------------------------------------


@bp.errorhandler(ValidationError)
def _invalid(error: ValidationError):
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return jsonify(error="invalid", errors=messages), 422


@bp.errorhandler(booking.InvalidBooking)
def _invalid_booking(error: booking.InvalidBooking):
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
    return jsonify(error="forbidden", message=str(error)), 403


@bp.errorhandler(booking.NotFound)
def _not_found(error: booking.NotFound):
    return jsonify(error="not_found", message=str(error)), 404


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    return jsonify(error=error.name.lower().replace(" ", "_"), message=error.description), error.code


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


@bp.get("/rooms/<int:room_id>/availability")
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
    return jsonify(reservations=[schemas.reservation_json(r) for r in found])


@bp.post("/reservations")
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
        return jsonify(schemas.reservation_json(first, result.warnings)), 201, location
    return (
        jsonify(
            series_id=first.series_id,
            reservations=[schemas.reservation_json(r) for r in result.reservations],
            warnings=result.warnings,
            skipped=[schemas.rfc3339(s) for s in result.skipped],
        ),
        201,
        location,
    )


@bp.get("/reservations/<int:reservation_id>")
def get_reservation(reservation_id: int):
    return jsonify(schemas.reservation_json(booking.get(db.session(), reservation_id, **_actor())))


@bp.patch("/reservations/<int:reservation_id>")
def edit_reservation(reservation_id: int):
    # Look first, so a caller who may not see it learns nothing from a 422 about the body.
    booking.get(db.session(), reservation_id, **_actor())
    changes = _load(schemas.ReservationPatchSchema(), _json_body())
    result = booking.edit(db.session(), _config(), reservation_id, **_actor(), **changes)
    return jsonify(schemas.reservation_json(result.reservations[0], result.warnings))


@bp.delete("/reservations/<int:reservation_id>")
def cancel_reservation(reservation_id: int):
    reservation = booking.cancel(db.session(), _config(), reservation_id, **_actor())
    return jsonify(schemas.reservation_json(reservation))


@bp.post("/reservations/<int:reservation_id>/retry")
def retry_reservation(reservation_id: int):
    """Try the Google write of a failed reservation again."""
    reservation = booking.retry_write(db.session(), reservation_id, **_actor())
    return jsonify(schemas.reservation_json(reservation)), 202


@bp.get("/insights")
def insights():
    """Utilisation figures per room (admins): `start`, `end` (YYYY-MM-DD), optional `room`, `building`, `floor`."""
    from webapp.insights import figures_from_query

    if not g.api_admin:
        raise booking.NotAllowed("insights are for admins")
    found = figures_from_query(db.session())
    return jsonify(start=found.start.isoformat(), end=found.end.isoformat(),
                   rooms=[figures.as_dict() for figures in found.rooms], total=found.total.as_dict())


@bp.post("/reservations/<int:reservation_id>/check-in")
def check_in_reservation(reservation_id: int):
    """Check in to a meeting (organiser, attendee or admin), inside its check-in window."""
    reservation = checkin.check_in(db.session(), _config(), reservation_id, checkin.person(g.api_user, g.api_admin))
    return jsonify(schemas.reservation_json(reservation))


@bp.get("/openapi.json")
def openapi():
    from webapp.openapi import spec

    return jsonify(spec())

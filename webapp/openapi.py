"""The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json.

Request bodies and query parameters are derived from the very marshmallow schemas the
handlers load with, so they cannot drift apart; tests/webapp/test_api.py checks that every
route is described and every answer matches its described shape.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from roombridge.models import ReleaseReason, ReservationSource, ReservationStatus
from webapp import schemas

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {}},
    },
}

CLASH = {
    "type": "object",
    "required": ["reservation_id", "start", "end", "title"],
    "properties": {
        "reservation_id": {"type": "integer"},
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": "string", "format": "date-time"},
        "title": {"type": "string"},
    },
}

_nullable_string = {"type": ["string", "null"]}
_datetime = {"type": "string", "format": "date-time"}

RESERVATION = {
    "type": "object",
    "required": ["id", "room_id", "title", "description", "start", "end", "time_zone", "start_local", "end_local",
                 "attendees", "organiser", "status", "status_reason", "source", "series_id", "google_event_id",
                 "checked_in_at", "checked_in_by", "release_reason", "created_at", "updated_at"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer"},
        "room_id": {"type": "integer"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "start": {**_datetime, "description": "UTC, RFC 3339 with Z"},
        "end": {**_datetime, "description": "UTC, RFC 3339 with Z"},
        "time_zone": {"type": "string", "description": "the room's IANA time zone"},
        "start_local": {**_datetime, "description": "the start in the room's time zone"},
        "end_local": _datetime,
        "attendees": {"type": "array", "items": {"type": "string", "format": "email"}},
        "organiser": {"type": "string", "format": "email"},
        "status": {"enum": [s.value for s in ReservationStatus],
                   "description": "`released`: nobody checked in by the deadline; the room is free again"},
        "status_reason": _nullable_string,
        "source": {"enum": [s.value for s in ReservationSource]},
        "series_id": _nullable_string,
        "google_event_id": _nullable_string,
        "checked_in_at": {"type": ["string", "null"], "format": "date-time"},
        "checked_in_by": {**_nullable_string, "description": "an e-mail, or `display` for the room's display"},
        "release_reason": {"enum": [*(r.value for r in ReleaseReason), None]},
        "created_at": _datetime,
        "updated_at": _datetime,
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}

SERIES = {
    "type": "object",
    "required": ["series_id", "reservations", "warnings", "skipped"],
    "additionalProperties": False,
    "properties": {
        "series_id": {"type": "string"},
        "reservations": {"type": "array", "items": {"$ref": "#/components/schemas/Reservation"}},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "skipped": {"type": "array", "items": _datetime, "description": "starts of clashing occurrences left out"},
    },
}

ROOM = {
    "type": "object",
    "required": ["id", "name", "calendar_id", "capacity", "building", "floor", "features", "time_zone"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "calendar_id": {"type": "string"},
        "capacity": {"type": ["integer", "null"]},
        "building": _nullable_string,
        "floor": _nullable_string,
        "features": {"type": "array", "items": {"type": "string"}},
        "time_zone": {"type": "string"},
    },
}

AVAILABILITY = {
    "type": "object",
    "required": ["room_id", "date", "time_zone", "busy"],
    "additionalProperties": False,
    "properties": {
        "room_id": {"type": "integer"},
        "date": {"type": "string", "format": "date"},
        "time_zone": {"type": "string"},
        "busy": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["start", "end", "start_local", "end_local", "reservation_id", "source"],
                "additionalProperties": False,
                "properties": {
                    "start": _datetime, "end": _datetime, "start_local": _datetime, "end_local": _datetime,
                    "reservation_id": {"type": "integer"}, "source": {"enum": ["web", "api", "google"]},
                },
            },
        },
    },
}


def field_schema(field: fields.Field) -> dict:
    """JSON Schema of one marshmallow field, with the limits its validators enforce."""
    if isinstance(field, fields.Nested):
        nested = field.nested if isinstance(field.nested, type) else type(field.nested)
        out = {"$ref": f"#/components/schemas/{nested.__name__.removesuffix('Schema')}"}
    elif isinstance(field, fields.List):
        out = {"type": "array", "items": field_schema(field.inner)}
    elif isinstance(field, fields.AwareDateTime):
        out = {"type": "string", "format": "date-time", "description": "RFC 3339 with an offset or Z"}
    elif isinstance(field, fields.Date):
        out = {"type": "string", "format": "date"}
    elif isinstance(field, fields.Email):
        out = {"type": "string", "format": "email"}
    elif isinstance(field, fields.Boolean):
        out = {"type": "boolean"}
    elif isinstance(field, fields.Integer):
        out = {"type": "integer"}
    elif isinstance(field, fields.String):
        out = {"type": "string"}
    else:  # pragma: no cover - a new field type must be taught here
        raise TypeError(f"no JSON Schema for {type(field).__name__}")
    for validator in field.validators:
        if isinstance(validator, validate.Length):
            lo, hi = ("minItems", "maxItems") if out.get("type") == "array" else ("minLength", "maxLength")
            if validator.min is not None and validator.min > 0:
                out[lo] = validator.min
            if validator.max is not None:
                out[hi] = validator.max
        elif isinstance(validator, validate.Range):
            if validator.min is not None:
                out["minimum"] = validator.min
            if validator.max is not None:
                out["maximum"] = validator.max
        elif isinstance(validator, validate.OneOf):
            out["enum"] = list(validator.choices)
    if field.allow_none and "$ref" not in out:
        out["type"] = [out["type"], "null"]
    if field.metadata.get("description"):
        out["description"] = field.metadata["description"]
    return out


def object_schema(schema: type[Schema]) -> dict:
    instance = schema()
    return {
        "type": "object",
        "additionalProperties": False,
        "required": sorted(name for name, f in instance.fields.items() if f.required),
        "properties": {name: field_schema(f) for name, f in instance.fields.items()},
    }


def query_parameters(schema: type[Schema]) -> list[dict]:
    instance = schema()
    return [
        {"name": name, "in": "query", "required": f.required, "schema": field_schema(f)}
        for name, f in instance.fields.items()
    ]


INSIGHTS_QUERY = (("start", "YYYY-MM-DD, included"), ("end", "YYYY-MM-DD, included"),
                  ("room", "a room's calendar e-mail or id"), ("building", "a building's name"),
                  ("floor", "a floor, with or without a building"))
_hours = {"type": "number"}
ROOM_FIGURES = {
    "type": "object",
    "required": ["room_id", "name", "bookings", "booked_hours", "checked_in_hours", "released_hours",
                 "ended_early_hours", "no_show_rate", "average_people", "sources"],
    "properties": {
        "room_id": {"type": ["integer", "null"]}, "calendar_id": {"type": "string"}, "name": {"type": "string"},
        "building": _nullable_string, "floor": _nullable_string, "capacity": {"type": ["integer", "null"]},
        "bookings": {"type": "integer"}, "booked_hours": _hours, "checked_in_hours": _hours,
        "released_hours": _hours, "ended_early_hours": _hours,
        "no_show_rate": {"type": ["number", "null"], "description": "no-shows among check-ins decided either way"},
        "average_people": {"type": ["number", "null"]},
        "sources": {"type": "object", "additionalProperties": {"type": "integer"},
                    "description": "bookings by where they were made: web, api, google, display"},
    },
}
INSIGHTS = {"type": "object", "required": ["start", "end", "rooms", "total"], "properties": {
    "start": {"type": "string", "format": "date"}, "end": {"type": "string", "format": "date"},
    "rooms": {"type": "array", "items": ROOM_FIGURES}, "total": ROOM_FIGURES}}


def _json(ref_or_schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ref_or_schema}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def spec() -> dict:
    errors = {
        "401": _json(_ref("Error"), "no valid API token"),
        "422": _json(_ref("Error"), "invalid input; `errors` maps each field to its messages"),
    }
    not_found = {"404": _json(_ref("Error"), "no such reservation, or not one the caller may see")}
    reservation_id = {"name": "reservation_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    one = _json(_ref("Reservation"), "the reservation")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Roombridge API",
            "version": "1",
            "description": "Meeting-room reservations kept in step with the rooms' Google calendars. "
            "Create a token with `flask --app wsgi tokens create EMAIL`.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/rooms": {"get": {"summary": "In-scope rooms", "responses": {
                "200": _json({"type": "object", "required": ["rooms"], "properties": {
                    "rooms": {"type": "array", "items": _ref("Room")}}}, "the rooms"),
                "401": errors["401"]}}},
            "/rooms/{room_id}/availability": {"get": {
                "summary": "Busy intervals of one day in the room's time zone",
                "parameters": [{"name": "room_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                               *query_parameters(schemas.AvailabilityQuerySchema)],
                "responses": {"200": _json(_ref("Availability"), "the busy intervals"), **errors,
                              "404": _json(_ref("Error"), "no such room in scope")}}},
            "/reservations": {
                "get": {
                    "summary": "Reservations the caller organises or attends (admins: all), overlapping start..end",
                    "parameters": query_parameters(schemas.ReservationQuerySchema),
                    "responses": {"200": _json({"type": "object", "required": ["reservations"], "properties": {
                        "reservations": {"type": "array", "items": _ref("Reservation")}}}, "the reservations"),
                        **errors}},
                "post": {
                    "summary": "Book a room (once, or a daily/weekly series)",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": _ref("ReservationCreate")}}},
                    "responses": {
                        "201": _json({"oneOf": [_ref("Reservation"), _ref("Series")]},
                                     "booked and pending; the Google write follows"),
                        **errors,
                        "409": _json({**ERROR, "properties": {**ERROR["properties"], "clashes": {
                            "type": "array", "items": CLASH}}}, "every clashing reservation"),
                    }},
            },
            "/reservations/{reservation_id}": {
                "parameters": [reservation_id],
                "get": {"summary": "One reservation", "responses": {"200": one, **errors, **not_found}},
                "patch": {
                    "summary": "Change time, room, title, description or attendees (organiser or admin)",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": _ref("ReservationPatch")}}},
                    "responses": {"200": one, **errors, **not_found,
                                  "403": _json(_ref("Error"), "not the organiser or an admin"),
                                  "409": _json(_ref("Error"), "clashes")}},
                "delete": {"summary": "Cancel (organiser or admin)", "responses": {
                    "200": one, **errors, **not_found, "403": _json(_ref("Error"), "not the organiser or an admin")}},
            },
            "/reservations/{reservation_id}/retry": {
                "parameters": [reservation_id],
                "post": {"summary": "Retry the Google write of a failed reservation", "responses": {
                    "202": one, **errors, **not_found, "403": _json(_ref("Error"), "not the organiser or an admin")}},
            },
            "/insights": {"get": {
                "summary": "Utilisation per room over whole UTC days start..end (admins; default the last 28 days)",
                "parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": "string"},
                                "description": d} for n, d in INSIGHTS_QUERY],
                "responses": {"200": _json(INSIGHTS, "the figures of every room in the filter, and their total"),
                              "400": _json(_ref("Error"), "a bad date range"), "401": errors["401"],
                              "403": _json(_ref("Error"), "not an admin")}}},
            "/reservations/{reservation_id}/check-in": {
                "parameters": [reservation_id],
                "post": {"summary": "Check in to a meeting (organiser, attendee or admin), from the room's check-in "
                         "window's opening (before the start) to its deadline (after the start); checking in twice "
                         "is harmless", "responses": {
                             "200": one, **errors, **not_found}},
            },
            "/openapi.json": {"get": {"summary": "This description", "security": [], "responses": {
                "200": {"description": "OpenAPI 3.1"}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": ERROR,
                "Room": ROOM,
                "Availability": AVAILABILITY,
                "Reservation": RESERVATION,
                "Series": SERIES,
                "Recurrence": object_schema(schemas.RecurrenceSchema),
                "ReservationCreate": object_schema(schemas.ReservationCreateSchema),
                "ReservationPatch": object_schema(schemas.ReservationPatchSchema),
            },
        },
    }

"""Marshmallow schemas of the JSON API: what a request may carry, and how answers look.

Loading is strict: unknown fields, wrong types, oversize strings, naive or absurd
datetimes are refused with per-field messages (422) before the domain sees them. The
rules both share (an end after the start, how a series ends, the lengths) are
roombridge/booking/rules.py's; the domain checks the rules that need the database and the room.

webapp/openapi.py generates the OpenAPI description from these classes, so every limit
enforced here is stated in a form a JSON Schema validator applies too: lengths and ranges,
and regular expressions (validators and `pattern` metadata) for the years allowed and for
text the database can store.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from roombridge import booking
from roombridge.booking import MAX_DESCRIPTION_LENGTH, MAX_TITLE_LENGTH, rules
from roombridge.booking.recurrence import MAX_INTERVAL
from roombridge.models import Reservation, Room

# Far enough for any booking, near enough that time-zone arithmetic never overflows.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# RFC 3339 as the API takes it, in the years 2000-2199 as written (offset aside). The fields
# below hold input to these very patterns, and the OpenAPI description states them.
DAY_PATTERN = r"^2[01][0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
INSTANT_PATTERN = (DAY_PATTERN[:-1] + r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
                   r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
MAX_ID = 2**31 - 1  # the database's integer; larger ids cannot exist
# Text PostgreSQL can store (no NUL); lone surrogates cannot even be encoded, see _storable.
STORABLE_TEXT = r"^[^\x00]*$"
# A title has something besides blanks (the domain strips it) and no NUL.
TITLE_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"


def _storable(value: str) -> None:
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded at all.
    if "\x00" in value:
        raise ValidationError("Must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError("Not valid Unicode text.") from exc


def _in_range(value: date) -> None:
    # The year as written (a datetime keeps its own offset), as the patterns state it:
    # 2199-12-31T23:00-05:00 is in, though it is 2200 in UTC.
    if not EARLIEST.year <= value.year < LATEST.year:
        raise ValidationError(f"Must be between {EARLIEST:%Y} and {LATEST:%Y}.")


class _Patterned:
    """A date or time field that takes only text matching its `pattern` metadata, before parsing it."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and not re.fullmatch(self.metadata["pattern"], value):
            if not re.match(r"^2[01][0-9]{2}-", value) and re.match(r"^[0-9]{4}-", value):
                raise ValidationError(f"Must be between {EARLIEST:%Y} and {LATEST:%Y}.")
            raise ValidationError(self.expected)
        return super()._deserialize(value, attr, data, **kwargs)


class InstantField(_Patterned, fields.AwareDateTime):
    expected = "Give RFC 3339 with an offset or Z, e.g. 2030-01-07T10:00:00Z."


class DayField(_Patterned, fields.Date):
    expected = "Give a day as YYYY-MM-DD."


def Text(max_length: int, *, required: bool = False, min_length: int = 0, pattern: str = STORABLE_TEXT,
         **kwargs) -> fields.String:
    return fields.String(
        required=required,
        validate=[validate.Length(min=min_length, max=max_length), validate.Regexp(pattern), _storable],
        **kwargs,
    )


def Instant(**kwargs) -> fields.AwareDateTime:
    """RFC 3339 with an offset or Z; naive times are refused, not guessed."""
    return InstantField(format="iso", validate=_in_range,
                        metadata={"pattern": INSTANT_PATTERN, "description": f"RFC 3339 with an offset or Z, "
                                  f"in the years {EARLIEST:%Y} to {LATEST.year - 1}"}, **kwargs)


def Day(**kwargs) -> fields.Date:
    """A calendar day, YYYY-MM-DD, in the years the API accepts."""
    metadata = {"pattern": DAY_PATTERN, **kwargs.pop("metadata", {})}
    return DayField(validate=_in_range, metadata=metadata, **kwargs)


def Email(**kwargs) -> fields.Email:
    return fields.Email(validate=[validate.Length(max=254), _storable], **kwargs)


def Id(**kwargs) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID), **kwargs)


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class RecurrenceSchema(StrictSchema):
    frequency = fields.String(required=True, validate=validate.OneOf(["daily", "weekly", "monthly"]))
    interval = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_INTERVAL), load_default=1,
                              metadata={"description": "every N days, weeks or months"})
    monthly = fields.String(
        validate=validate.OneOf(["date", "weekday"]), load_default="date",
        metadata={"description": "monthly only: on the first occurrence's date (the 10th), or on its weekday "
                                 "(the 2nd Tuesday; a 5th one means the last)"})
    weekdays = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=0, max=6)),
        load_default=list,
        validate=validate.Length(max=7),
        metadata={"description": "0 = Monday ... 6 = Sunday; weekly only; default the start's weekday"},
    )
    count = fields.Integer(strict=True, validate=validate.Range(min=1, max=1000), allow_none=True, load_default=None)
    until = Day(allow_none=True, load_default=None,
                metadata={"description": "last day (inclusive), in the room's time zone"})

    class Meta(StrictSchema.Meta):
        # Stated in the OpenAPI description as it is checked below: exactly one of the two.
        json_schema = {"oneOf": [
            {"required": ["count"], "properties": {"count": {"type": "integer"}}},
            {"required": ["until"], "properties": {"until": {"type": "string"}}},
        ]}

    @validates_schema
    def _count_or_until(self, data, **kwargs):
        errors: dict[str, list[str]] = {}
        if not rules.check_repeat_end(data.get("count"), data.get("until"), errors, "count"):
            raise ValidationError(errors)


class SpanSchema(StrictSchema):
    """A start and an end: the end after the start, by the rule the pages and the commands use."""

    @validates_schema
    def _end_after_start(self, data, **kwargs):
        errors: dict[str, list[str]] = {}
        if data.get("start") and data.get("end") and not rules.check_span(data["start"], data["end"], errors):
            raise ValidationError(errors)


class ReservationCreateSchema(SpanSchema):
    room_id = Id(required=True)
    title = Text(MAX_TITLE_LENGTH, required=True, min_length=1, pattern=TITLE_TEXT)
    description = Text(MAX_DESCRIPTION_LENGTH, load_default="")
    start = Instant(required=True)
    end = Instant(required=True)
    attendees = fields.List(Email(), load_default=list)  # how many, and whose: the domain's rule (MAX_ATTENDEES)
    recurrence = fields.Nested(RecurrenceSchema, allow_none=True, load_default=None)
    skip_conflicts = fields.Boolean(
        load_default=False,
        metadata={"description": "store a series without its clashing occurrences instead of refusing it"},
    )


class ReservationPatchSchema(SpanSchema):
    room_id = Id()
    title = Text(MAX_TITLE_LENGTH, min_length=1, pattern=TITLE_TEXT)
    description = Text(MAX_DESCRIPTION_LENGTH)
    start = Instant()
    end = Instant()
    attendees = fields.List(Email())


class ScopeQuerySchema(StrictSchema):
    """PATCH and DELETE of a reservation: which occurrences of its series the change covers."""

    scope = fields.String(
        validate=validate.OneOf(["this", "following", "all"]), load_default="this",
        metadata={"description": "an occurrence of a series: `this` one (an exception of its Google instance), "
                                 "this and the `following` ones (the series is ended before it and a new one "
                                 "starts there), or `all` (not yet over, for a cancel); a single booking: itself"})


class ReservationQuerySchema(StrictSchema):
    # Query strings are text: "7" is the room 7 here, unlike in a JSON body.
    room = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    start = Instant()
    end = Instant()


class AvailabilityQuerySchema(StrictSchema):
    date = Day(required=True)


class InsightsQuerySchema(StrictSchema):
    """GET /api/v1/insights. The range's own rules (start not after end, at most 366 days) answer 422."""

    start = Day(metadata={"description": "the first day (UTC), included; default 27 days before `end`"})
    end = Day(metadata={"description": "the last day (UTC), included; default today"})
    room = fields.String(validate=validate.Length(max=254), metadata={"description": "a room's calendar e-mail or id"})
    building = fields.String(validate=validate.Length(max=200), metadata={"description": "a building's name"})
    floor = fields.String(validate=validate.Length(max=50), metadata={"description": "a floor"})


# --- answers ---------------------------------------------------------------------------------


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def reservation_json(reservation: Reservation, warnings: list[str] | None = None, *, viewer_email: str | None,
                     viewer_is_admin: bool = False) -> dict:
    """The reservation as the viewer may see it: a private meeting of others shows only as "Busy"."""
    zone = reservation.room.zone
    shown = booking.may_see_details(reservation, viewer_email, viewer_is_admin)
    answer = {
        "id": reservation.id,
        "room_id": reservation.room_id,
        "title": reservation.title if shown else booking.PRIVATE_TITLE,
        "description": reservation.description if shown else "",
        "start": rfc3339(reservation.start_at),
        "end": rfc3339(reservation.end_at),
        "time_zone": reservation.room.time_zone,
        "start_local": reservation.start_at.astimezone(zone).isoformat(timespec="seconds"),
        "end_local": reservation.end_at.astimezone(zone).isoformat(timespec="seconds"),
        "attendees": list(reservation.attendees or []) if shown else [],
        "organiser": reservation.organiser_email,
        "status": str(reservation.status),
        "status_reason": reservation.status_reason,
        "source": str(reservation.source),
        "series_id": reservation.series_id,
        "google_event_id": reservation.google_event_id,
        "checked_in_at": rfc3339(reservation.checked_in_at) if reservation.checked_in_at else None,
        "checked_in_by": reservation.checked_in_by,
        "release_reason": str(reservation.release_reason) if reservation.release_reason else None,
        "created_at": rfc3339(reservation.created_at),
        "updated_at": rfc3339(reservation.updated_at),
    }
    if warnings:
        answer["warnings"] = warnings
    return answer


def room_json(room: Room) -> dict:
    return {
        "id": room.id,
        "name": room.name,
        "calendar_id": room.calendar_id,
        "capacity": room.capacity,
        "building": room.building,
        "floor": room.floor,
        "features": list(room.features or []),
        "time_zone": room.time_zone,
    }

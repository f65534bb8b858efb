"""The employees' pages: room finder, room day view, booking form, my reservations.

Handlers stay thin: read the form (webapp.forms), call roombridge.booking, render. Every list
page loads what it shows in a fixed number of queries, however many rows it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFError

from roombridge import api_tokens, booking, checkin, db, people
from roombridge.booking.recurrence import describe as describe_rule
from roombridge.models import Reservation, ReservationSeries, ReservationSource, ReservationStatus, Room
from webapp.auth import current_user, login_required
from webapp.forms import MONTHLY_CHOICES, REPEAT_CHOICES, WEEKDAYS, BookingForm, FinderQuery
from webapp.limits import booking_writes

bp = Blueprint("pages", __name__)

PAST_LIMIT = 50
UPCOMING_LIMIT = 200

STATUS_TEXT = {
    ReservationStatus.PENDING: ("Waiting for Google", "Saved here; being written to the room's Google calendar."),
    ReservationStatus.CONFIRMED: ("Confirmed", "The booking is on the room's Google calendar."),
    ReservationStatus.FAILED: ("Failed", "Google refused this booking."),
    ReservationStatus.CANCELLED: ("Cancelled", "This booking is cancelled."),
    ReservationStatus.CONFLICT: ("Conflict", "This booking clashes with another one; an admin will sort it out."),
    ReservationStatus.RELEASED: ("Released", "Nobody checked in in time, so the room was given back."),
}


def _config():
    return current_app.config["ROOMBRIDGE"]


def _zone(room: Room) -> ZoneInfo:
    return room.zone


def _in_scope_rooms(session) -> list[Room]:
    return list(session.scalars(sa.select(Room).where(Room.in_scope.is_(True)).order_by(Room.name)))


def status_payload(reservation: Reservation) -> dict:
    label, explanation = STATUS_TEXT[reservation.status]
    if reservation.status == ReservationStatus.FAILED and reservation.status_reason:
        explanation = f"Google refused this booking: {reservation.status_reason}"
    if reservation.status == ReservationStatus.RELEASED and reservation.status_reason:
        explanation = f"Released: {reservation.status_reason.removeprefix('released: ')}; the room was given back."
    return {"id": reservation.id, "status": str(reservation.status), "label": label, "explanation": explanation,
            "final": reservation.status != ReservationStatus.PENDING}


# --- the day timeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    start: datetime  # in the room's zone
    end: datetime
    busy: booking.Busy | None

    @property
    def minutes(self) -> int:
        return int((self.end - self.start).total_seconds() // 60)


def day_segments(busy: list[booking.Busy], day: date, zone: ZoneInfo, hours: str) -> list[Segment]:
    """The room's bookable hours on `day` cut into free and busy stretches, in the room's zone.

    Busy stretches outside the bookable hours are kept (a Google booking at 06:00 is real);
    the shown window widens to include them.
    """
    opens, closes = booking.parse_hours(hours)
    window_start = datetime.combine(day, opens, zone)
    window_end = datetime.combine(day + timedelta(days=1), time(0), zone) if closes is None else (
        datetime.combine(day, closes, zone))
    day_start, day_end = datetime.combine(day, time(0), zone), datetime.combine(day + timedelta(days=1), time(0), zone)
    spans = sorted((max(b.start.astimezone(zone), day_start), min(b.end.astimezone(zone), day_end), b) for b in busy)
    if spans:
        window_start = min(window_start, spans[0][0])
        window_end = max(window_end, max(s[1] for s in spans))
    segments: list[Segment] = []
    cursor = window_start
    for start, end, item in spans:
        if start > cursor:
            segments.append(Segment(cursor, start, None))
        if end > cursor:
            segments.append(Segment(max(start, cursor), end, item))
            cursor = end
    if cursor < window_end:
        segments.append(Segment(cursor, window_end, None))
    return segments


def _timelines(session, rooms: list[Room], day: date) -> dict[int, list[Segment]]:
    user = current_user()
    busy = booking.day_timeline(session, rooms, day, user.email if user else None, bool(user and user.is_admin))
    config = _config()
    return {
        room.id: day_segments(busy.get(room.id, []), day, _zone(room), room.bookable_hours or config.BOOKABLE_HOURS)
        for room in rooms
    }


# --- room finder -------------------------------------------------------------------------------


def _matching(rooms: list[Room], query: FinderQuery) -> list[Room]:
    return [
        r for r in rooms
        if (query.people is None or (r.capacity or 0) >= query.people)
        and (not query.building or r.building == query.building)
        and (not query.floor or r.floor == query.floor)
        and set(query.features) <= {f.lower() for f in (r.features or [])}
    ]


def _filters(rooms: list[Room]) -> dict:
    return {"buildings": sorted({r.building for r in rooms if r.building}),
            "floors": sorted({r.floor for r in rooms if r.floor}),
            "features": sorted({f.lower() for r in rooms for f in (r.features or [])})}


@bp.get("/")
@login_required
def finder():
    session = db.session()
    user = current_user()
    rooms = _in_scope_rooms(session)
    zone = _zone(rooms[0]) if rooms else ZoneInfo("UTC")
    now = datetime.now(UTC)
    query = FinderQuery.from_args(request.args, now.astimezone(zone))
    matching = _matching(rooms, query)
    # The same rule functions as booking: a room is offered only if booking would accept it.
    assessments = {} if query.errors else booking.assess(
        session, _config(), matching, query.day, query.start, query.end, now)
    free_ids = {room_id for room_id, found in assessments.items() if found.bookable}
    favourites = people.favourite_room_ids(session, user.email)
    matching.sort(key=lambda r: (r.id not in favourites, r.id not in free_ids, r.capacity or 0, r.name))
    return render_template(
        "finder.html", query=query, rooms=matching, free_ids=free_ids, assessments=assessments,
        favourites=favourites, timelines=_timelines(session, matching, query.day), zones=_zones_by_room(matching),
        **_filters(rooms),
    )


FREE_NOW_MINUTES = (30, 60)
SUGGESTION_STEP = timedelta(minutes=5)


def _round_up(moment: datetime, step: timedelta = SUGGESTION_STEP) -> datetime:
    """The next whole step after `moment` (a booking form takes whole minutes; a past start is refused)."""
    seconds = step.total_seconds()
    return datetime.fromtimestamp((moment.timestamp() // seconds + 1) * seconds, moment.tzinfo)


@bp.get("/free-now")
@login_required
def free_now():
    """Rooms free from now for 30 or 60 minutes, each bookable with one more click."""
    session = db.session()
    minutes = request.args.get("minutes", type=int)
    minutes = minutes if minutes in FREE_NOW_MINUTES else FREE_NOW_MINUTES[0]
    now = datetime.now(UTC)
    start = _round_up(now)
    rooms = _in_scope_rooms(session)
    favourites = people.favourite_room_ids(session, current_user().email)
    offers = []
    for zone_name in sorted({r.time_zone or "UTC" for r in rooms}):
        in_zone = [r for r in rooms if (r.time_zone or "UTC") == zone_name]
        local_start = start.astimezone(in_zone[0].zone)
        local_end = local_start + timedelta(minutes=minutes)
        if local_end.date() != local_start.date():
            continue  # past midnight: no room is bookable across days
        found = booking.assess(session, _config(), in_zone, local_start.date(), local_start.time(),
                               local_end.time(), now, nearest=0)
        offers += [a for a in found.values() if a.bookable]
    offers.sort(key=lambda a: (a.room.id not in favourites, a.room.capacity or 0, a.room.name))
    return render_template("free_now.html", offers=offers, minutes=minutes, choices=FREE_NOW_MINUTES,
                           favourites=favourites)


@bp.post("/rooms/<id:room_id>/favourite")
@login_required
def favourite(room_id: int):
    if not people.set_favourite(db.session(), current_user().email, room_id, request.form.get("favourite") == "1"):
        _refuse(404)
    back = request.form.get("next", "")
    # Only a path of this site: never an open redirect.
    return redirect(back if back.startswith("/") and not back.startswith("//") else url_for("pages.finder"))


@bp.get("/people.json")
@login_required
def people_json():
    """Attendee suggestions: people the organisation already has in Roombridge (never Google's directory)."""
    response = jsonify(people.suggest(db.session(), _config(), request.args.get("q", "")[:100]))
    response.headers["Cache-Control"] = "no-store"
    return response


# --- the grid: rooms (or one room's week) against the hours ---------------------------------


@dataclass(frozen=True)
class Piece:
    """Part of one grid cell: a busy stretch, or a free one that is offered only if booking would accept it."""

    start: datetime  # in the grid's zone
    end: datetime
    label: str
    book_url: str | None = None
    busy: bool = False


@dataclass(frozen=True)
class GridRow:
    heading: str
    link: str
    cells: list[list[Piece]]
    room: Room
    day: date


def _busy_label(busy: booking.Busy) -> str:
    """"Busy: title", or only "Busy" for a private meeting the viewer may not see into (booking.may_see_details)."""
    label = booking.PRIVATE_TITLE if busy.hidden else f"Busy: {busy.title}"
    return label + (" (Google)" if busy.source == ReservationSource.GOOGLE else "")


def _grid_row(room: Room, day: date, segments: list[Segment], hours: list[datetime], zone: ZoneInfo,
              now: datetime, heading: str, link: str) -> GridRow:
    config = _config()
    earliest_start = _round_up(now)
    cells = []
    for hour in hours:
        hour_end = hour + timedelta(hours=1)
        pieces = []
        for seg in segments:
            start, end = max(seg.start.astimezone(zone), hour), min(seg.end.astimezone(zone), hour_end)
            if start >= end:
                continue
            if seg.busy:
                pieces.append(Piece(start, end, _busy_label(seg.busy), busy=True))
                continue
            start = max(start, earliest_start.astimezone(zone))
            if start >= end:
                continue
            if booking.refusals(room, config, start, end, now):
                continue
            local_start, local_end = start.astimezone(room.zone), end.astimezone(room.zone)
            pieces.append(Piece(start, end, f"Book {room.name} {local_start:%H:%M}–{local_end:%H:%M}", url_for(
                "pages.book_form", room_id=room.id, date=local_start.date().isoformat(),
                start=f"{local_start:%H:%M}", end=f"{local_end:%H:%M}")))
        cells.append(pieces)
    return GridRow(heading, link, cells, room, day)


def _hours(rooms: list[Room], days: list[date], zone: ZoneInfo) -> list[datetime]:
    """The whole hours (in `zone`) from the earliest opening to the latest closing of these rooms."""
    config = _config()
    first, last = 24, 0
    for room in rooms:
        opens, closes = booking.parse_hours(room.bookable_hours or config.BOOKABLE_HOURS)
        for day in days[:1]:
            opening = datetime.combine(day, opens, room.zone).astimezone(zone)
            closing = (datetime.combine(day + timedelta(days=1), time(0), room.zone) if closes is None
                       else datetime.combine(day, closes, room.zone)).astimezone(zone)
            first = min(first, opening.hour)
            last = max(last, 24 if closing.date() > day else closing.hour + (1 if closing.minute else 0))
    first, last = (8, 18) if first >= last else (first, last)
    return [datetime.combine(days[0], time(h), zone) for h in range(first, last)]


def _now_column(hours: list[datetime], now: datetime) -> int | None:
    for index, hour in enumerate(hours):
        if hour <= now < hour + timedelta(hours=1):
            return index
    return None


@bp.get("/grid")
@login_required
def grid():
    session = db.session()
    rooms = _in_scope_rooms(session)
    now = datetime.now(UTC)
    query = FinderQuery.from_args(request.args, now.astimezone(_zone(rooms[0]) if rooms else ZoneInfo("UTC")))
    matching = _matching(rooms, query)
    favourites = people.favourite_room_ids(session, current_user().email)
    matching.sort(key=lambda r: (r.id not in favourites, r.building or "", r.name))
    # One zone for the whole grid: the building's (its rooms share one); the first room's otherwise.
    zone = _zone(matching[0]) if matching else ZoneInfo("UTC")
    hours = _hours(matching, [query.day], zone)
    timelines = _timelines(session, matching, query.day)
    rows = [_grid_row(room, query.day, timelines[room.id], hours, zone, now, room.name,
                      url_for("pages.week", room_id=room.id, date=query.day.isoformat())) for room in matching]
    return render_template("grid.html", query=query, rows=rows, hours=hours, zone=zone,
                           now_column=_now_column(hours, now.astimezone(zone)), now=now.astimezone(zone),
                           previous_day=query.day - timedelta(days=1), next_day=query.day + timedelta(days=1),
                           **_filters(rooms))


def _room_in_scope(session, room_id: int) -> Room:
    """The in-scope room, or 404: its day page and its week page show nothing else."""
    found = session.get(Room, room_id)
    if found is None or not found.in_scope:
        _refuse(404)
    return found


@bp.get("/rooms/<id:room_id>/week")
@login_required
def week(room_id: int):
    session = db.session()
    found = _room_in_scope(session, room_id)
    zone = _zone(found)
    now = datetime.now(UTC)
    asked = _date_arg("date") or now.astimezone(zone).date()
    monday = asked - timedelta(days=asked.weekday())
    days = [monday + timedelta(days=n) for n in range(7)]
    hours = _hours([found], days, zone)
    rows = []
    for day in days:
        day_hours = [datetime.combine(day, h.time(), zone) for h in hours]
        rows.append(_grid_row(found, day, _timelines(session, [found], day)[found.id], day_hours, zone, now,
                              f"{day:%a %d %b}", url_for("pages.room", room_id=found.id, date=day.isoformat())))
    return render_template("week.html", room=found, rows=rows, hours=hours, zone=zone, days=days,
                           previous_week=monday - timedelta(days=7), next_week=monday + timedelta(days=7))


def _zones_by_room(rooms: list[Room]) -> dict[int, ZoneInfo]:
    return {room.id: _zone(room) for room in rooms}


@bp.get("/rooms/<id:room_id>")
@login_required
def room(room_id: int):
    session = db.session()
    found = _room_in_scope(session, room_id)
    zone = _zone(found)
    day = _date_arg("date") or datetime.now(UTC).astimezone(zone).date()
    segments = _timelines(session, [found], day)[found.id]
    return render_template("room.html", room=found, day=day, zone=zone, segments=segments,
                           previous_day=day - timedelta(days=1), next_day=day + timedelta(days=1))


def _date_arg(name: str) -> date | None:
    try:
        return date.fromisoformat(request.args.get(name, ""))
    except ValueError:
        return None


# --- booking ---------------------------------------------------------------------------------


def _render_booking_form(form: BookingForm, rooms: list[Room], status: int = 200,
                         reservation: Reservation | None = None, instead: list[dict] | None = None):
    return render_template("book.html", form=form, rooms=rooms, repeat_choices=REPEAT_CHOICES,
                           monthly_choices=MONTHLY_CHOICES, weekdays=WEEKDAYS, reservation=reservation,
                           instead=instead or []), status


def _instead(session, form: BookingForm, room: Room, start: datetime, end: datetime) -> list[dict]:
    """After a clash: the nearest free times in that room, then other free rooms that fit, at the asked time.

    Each is the typed-in form with the room or times changed, so one click books it.
    """
    now = datetime.now(UTC)
    local_start, local_end = start.astimezone(room.zone), end.astimezone(room.zone)
    found = booking.assess(session, _config(), [room], local_start.date(), local_start.time(), local_end.time(),
                           now)[room.id]
    offers = []
    for slot_start, slot_end in found.nearest:
        offers.append({"label": f"{room.name}, {slot_start:%H:%M}–{slot_end:%H:%M}",
                       "values": {**form.values, "start": f"{slot_start:%H:%M}", "end": f"{slot_end:%H:%M}"}})
    people_count = len({current_user().email, *form.attendee_list()})
    for other in booking.rooms_that_fit(session, _config(), room, start, end, now, people=people_count):
        other_start, other_end = start.astimezone(other.zone), end.astimezone(other.zone)
        offers.append({"label": f"{other.name}, {other_start:%H:%M}–{other_end:%H:%M}"
                                + (f" ({other.capacity} people)" if other.capacity else ""),
                       "values": {**form.values, "room_id": str(other.id), "date": other_start.date().isoformat(),
                                  "start": f"{other_start:%H:%M}", "end": f"{other_end:%H:%M}"}})
    return offers


@bp.get("/book")
@login_required
def book_form():
    rooms = _in_scope_rooms(db.session())
    return _render_booking_form(BookingForm.from_mapping(request.args), rooms)[0]


@bp.post("/book")
@login_required
@booking_writes
def book():
    session = db.session()
    user = current_user()
    rooms = _in_scope_rooms(session)
    form = BookingForm.from_mapping(request.form)
    room = form.room({r.id: r for r in rooms})
    zone = _zone(room) if room is not None else ZoneInfo("UTC")
    when = form.when(zone)
    recurrence = form.recurrence()
    if form.errors or room is None or when is None:
        form.require_title()  # the domain, which checks it otherwise, is not reached
        return _render_booking_form(form, rooms, 422)
    try:
        result = booking.book(session, _config(), booking.BookingRequest(
            room_id=room.id, organiser_email=user.email, title=form.values["title"], start=when[0], end=when[1],
            attendees=form.attendee_list(), description=form.values["description"], recurrence=recurrence,
            source=ReservationSource.WEB,
        ))
    except booking.InvalidBooking as exc:
        form.add_domain_errors(exc.errors)
        return _render_booking_form(form, rooms, 422)
    except booking.Conflict as exc:
        form.add_conflict(exc, zone)
        return _render_booking_form(form, rooms, 409, instead=_instead(session, form, room, *when))
    for warning in result.warnings:
        flash(warning, "warning")
    count = len(result.reservations)
    flash(f"{room.name} booked" + (f" ({count} occurrences)." if count > 1 else "."), "success")
    return redirect(url_for("pages.reservation", reservation_id=result.reservations[0].id))


# --- my reservations ---------------------------------------------------------------------------


def _mine(user):
    return booking.organised_or_attended_by(user.email)


def _preload_rooms(session, reservations: list[Reservation]) -> list[Room]:
    # One query for every room shown; `reservation.room` of each row then hits the identity map.
    ids = {r.room_id for r in reservations}
    return list(session.scalars(sa.select(Room).where(Room.id.in_(ids)))) if ids else []


@bp.get("/reservations")
@login_required
def reservations():
    session = db.session()
    user = current_user()
    now = datetime.now(UTC)
    upcoming = list(session.scalars(
        sa.select(Reservation)
        .where(_mine(user), Reservation.end_at > now, Reservation.status != ReservationStatus.CANCELLED)
        .order_by(Reservation.start_at, Reservation.id).limit(UPCOMING_LIMIT)
    ))
    past = list(session.scalars(
        sa.select(Reservation)
        .where(_mine(user), Reservation.end_at <= now)
        .order_by(Reservation.start_at.desc(), Reservation.id.desc()).limit(PAST_LIMIT)
    ))
    rooms = _preload_rooms(session, upcoming + past)  # held while rendering: the identity map keeps weak references
    zones = _zones_by_room(rooms)
    return render_template("reservations.html", upcoming=_by_day(upcoming, zones), past=_by_day(past, zones),
                           status_text=STATUS_TEXT, now=now, user=user, can_change=booking.can_change, zones=zones,
                           rooms=rooms, can_check_in=lambda r: checkin.can_check_in(r, _config(), now))


@dataclass
class Listed:
    """One row of My reservations: a single booking, or a series shown once at its first listed occurrence."""

    reservation: Reservation
    occurrences: list[Reservation]


def _by_day(reservations: list[Reservation], zones: dict[int, ZoneInfo]) -> list[tuple[date, list[Listed]]]:
    """Rows grouped by their day in the room's zone, in the order given; a series is one row."""
    days: dict[date, list[Listed]] = {}
    series: dict[str, Listed] = {}
    for reservation in reservations:
        if reservation.series_id and reservation.series_id in series:
            series[reservation.series_id].occurrences.append(reservation)
            continue
        row = Listed(reservation, [reservation])
        if reservation.series_id:
            series[reservation.series_id] = row
        days.setdefault(reservation.start_at.astimezone(zones[reservation.room_id]).date(), []).append(row)
    return list(days.items())


def _visible(reservation_id: int) -> Reservation:
    user = current_user()
    try:
        return booking.get(db.session(), reservation_id, actor_email=user.email, actor_is_admin=user.is_admin)
    except booking.NotFound:
        _refuse(404)


@bp.get("/reservations/<id:reservation_id>")
@login_required
def reservation(reservation_id: int):
    found = _visible(reservation_id)
    user = current_user()
    now = datetime.now(UTC)
    organises = booking.can_change(found, user.email, user.is_admin) and found.is_live
    made_here = found.source != ReservationSource.GOOGLE
    series = db.session().get(ReservationSeries, found.series_id) if found.series_id else None
    repeats = describe_rule(series.rule, _zone(series.room)) if series is not None else None
    # A booking made in Google may be ended early (the room declines the rest) but not extended
    # or edited here: it is its organiser's event (roombridge/checkin.py).
    return render_template("reservation.html", reservation=found, zone=_zone(found.room), status=status_payload(found),
                           repeats=repeats,
                           may_change=organises and made_here, may_check_in=checkin.can_check_in(found, _config(), now),
                           under_way=organises and found.start_at <= now < found.end_at,
                           extensions=checkin.EXTENSIONS if made_here else ())


@bp.get("/reservations/<id:reservation_id>/status.json")
@login_required
def reservation_status(reservation_id: int):
    response = jsonify(status_payload(_visible(reservation_id)))
    response.headers["Cache-Control"] = "no-store"
    return response


def _changeable(reservation_id: int) -> Reservation:
    found = _visible(reservation_id)
    user = current_user()
    if not booking.can_change(found, user.email, user.is_admin):
        _refuse(403)
    return found


@bp.get("/reservations/<id:reservation_id>/edit")
@login_required
def edit_form(reservation_id: int):
    found = _changeable(reservation_id)
    rooms = _in_scope_rooms(db.session())
    return _render_booking_form(BookingForm.for_reservation(found, _zone(found.room)), rooms, reservation=found)[0]


@bp.post("/reservations/<id:reservation_id>/edit")
@login_required
@booking_writes
def edit(reservation_id: int):
    session = db.session()
    found = _changeable(reservation_id)
    user = current_user()
    rooms = _in_scope_rooms(session)
    form = BookingForm.from_mapping(request.form, with_repeat=False)
    room = form.room({r.id: r for r in rooms})
    zone = _zone(room) if room is not None else _zone(found.room)
    when = form.when(zone)
    if form.errors or room is None or when is None:
        form.require_title()  # the domain, which checks it otherwise, is not reached
        return _render_booking_form(form, rooms, 422, reservation=found)
    try:
        result = booking.edit(
            session, _config(), reservation_id, actor_email=user.email, actor_is_admin=user.is_admin,
            room_id=room.id, title=form.values["title"], start=when[0], end=when[1],
            attendees=form.attendee_list(), description=form.values["description"], scope=_scope(),
        )
    except booking.InvalidBooking as exc:
        form.add_domain_errors(exc.errors)
        return _render_booking_form(form, rooms, 422, reservation=found)
    except booking.Conflict as exc:
        form.add_conflict(exc, zone)
        return _render_booking_form(form, rooms, 409, reservation=found)
    except booking.NotAllowed as exc:
        flash(str(exc), "error")
        return redirect(url_for("pages.reservation", reservation_id=reservation_id))
    for warning in result.warnings:
        flash(warning, "warning")
    flash("Changes saved.", "success")
    return redirect(url_for("pages.reservation", reservation_id=reservation_id))


def _scope() -> str:
    """Which occurrences of a series the form's change covers; anything unknown means this one only."""
    scope = request.form.get("scope", "this")
    return scope if scope in booking.SCOPES else "this"


@bp.get("/reservations/<id:reservation_id>/cancel")
@login_required
def cancel_confirm(reservation_id: int):
    found = _changeable(reservation_id)
    return render_template("cancel.html", reservation=found, zone=_zone(found.room))


@bp.post("/reservations/<id:reservation_id>/cancel")
@login_required
@booking_writes
def cancel(reservation_id: int):
    _changeable(reservation_id)
    user = current_user()
    try:
        booking.cancel(db.session(), _config(), reservation_id, actor_email=user.email, actor_is_admin=user.is_admin,
                       scope=_scope())
    except booking.NotAllowed as exc:
        flash(str(exc), "error")
        return redirect(url_for("pages.reservation", reservation_id=reservation_id))
    flash("Reservation cancelled.", "success")
    return redirect(url_for("pages.reservations"))


# --- my API tokens ---------------------------------------------------------------------------------


@bp.get("/tokens")
@login_required
def tokens():
    return _tokens_page()


def _tokens_page(new_token: str | None = None, status: int = 200):
    user = current_user()
    mine = api_tokens.list_tokens(db.session(), user.email)
    return render_template("tokens.html", tokens=mine, new_token=new_token, now=datetime.now(UTC)), status


@bp.post("/tokens")
@login_required
def create_token():
    try:
        days = int(request.form.get("expires_in_days", ""))
        if not 1 <= days <= MAX_TOKEN_DAYS:
            raise ValueError
    except ValueError:
        flash(f"Give the token a life of 1 to {MAX_TOKEN_DAYS} days.", "error")
        return _tokens_page(status=422)
    new = api_tokens.create(db.session(), current_user().email, actor=current_user().email,
                            expires_in=timedelta(days=days))
    return _tokens_page(new_token=new.token)


@bp.post("/tokens/<id:token_id>/revoke")
@login_required
def revoke_token(token_id: int):
    user = current_user()
    if api_tokens.revoke_by_id(db.session(), token_id, actor=user.email, owner=user.email) is None:
        _refuse(404)
    flash("Token revoked.", "success")
    return redirect(url_for("pages.tokens"))


MAX_TOKEN_DAYS = 3650


# --- check-in, end early, extend -------------------------------------------------------------------


def _after_action(reservation_id: int):
    if request.form.get("back") == "list":
        return redirect(url_for("pages.reservations"))
    return redirect(url_for("pages.reservation", reservation_id=reservation_id))


def _run_action(reservation_id: int, action, done: str):
    """Run a check-in command for the signed-in person; its refusal becomes a message on the page."""
    _visible(reservation_id)
    user = current_user()
    try:
        action(checkin.person(user.email, user.is_admin))
    except booking.InvalidBooking as exc:
        flash(" ".join(m for messages in exc.errors.values() for m in messages), "error")
    except (booking.NotAllowed, booking.Conflict) as exc:
        flash(str(exc), "error")
    else:
        flash(done, "success")
    return _after_action(reservation_id)


@bp.post("/reservations/<id:reservation_id>/check-in")
@login_required
def check_in(reservation_id: int):
    return _run_action(reservation_id, lambda actor: checkin.check_in(
        db.session(), _config(), reservation_id, actor), "Checked in.")


@bp.post("/reservations/<id:reservation_id>/end-early")
@login_required
def end_early(reservation_id: int):
    return _run_action(reservation_id, lambda actor: checkin.end_early(
        db.session(), _config(), reservation_id, actor), "Meeting ended; the room is free again.")


@bp.post("/reservations/<id:reservation_id>/extend")
@login_required
def extend(reservation_id: int):
    minutes = request.form.get("minutes", type=int) or 0
    return _run_action(reservation_id, lambda actor: checkin.extend(
        db.session(), _config(), reservation_id, minutes, actor), f"Extended by {minutes} minutes.")


@bp.route("/check-in/<token>", methods=["GET", "POST"])
def check_in_by_link(token: str):
    """The invitation mail's one-click link: a button, so a mail scanner's GET never checks anyone in."""
    config = _config()
    reservation_id = checkin.reservation_of_link(config, token)
    if reservation_id is None:
        return render_template("error.html", title="Link expired",
                               message="This check-in link is no longer valid: its check-in window has closed."), 404
    found = db.session().get(Reservation, reservation_id)
    if found is None:
        _refuse(404)
    message = None
    if request.method == "POST":
        try:
            found = checkin.check_in(db.session(), config, reservation_id, checkin.Actor(mail_link=True))
        except booking.InvalidBooking as exc:
            message = " ".join(m for messages in exc.errors.values() for m in messages)
    # The link is the credential, not a sign-in: whoever holds it sees a private meeting as "Busy"
    # unless signed in as someone who may see into it (the one rule, booking.may_see_details).
    viewer = current_user()
    title = booking.title_for(found, viewer.email if viewer else None, bool(viewer and viewer.is_admin))
    return render_template("check_in_link.html", reservation=found, title=title, zone=_zone(found.room),
                           message=message, may_check_in=checkin.can_check_in(found, config, datetime.now(UTC)))


# --- errors and template helpers ------------------------------------------------------------------


@bp.app_errorhandler(CSRFError)
def csrf_refused(error: CSRFError):
    return render_template("error.html", title="Form expired",
                           message="This form was refused because its security token is missing or out of date. "
                                   "Go back, reload the page and try again."), 400


def _refuse(status: int):
    """Stop with a page of our own; the JSON API keeps its own error bodies, so no app-wide handler."""
    title, message = {
        403: ("Not allowed", "You may not change this. Only its organiser or an admin may."),
        404: ("Not found", "There is nothing here, or not for you."),
    }[status]
    abort(make_response(render_template("error.html", title=title, message=message), status))


@bp.app_template_global("busy_label")
def busy_label(busy: booking.Busy) -> str:
    return _busy_label(busy)


@bp.app_template_filter("local")
def local_time(value: datetime, zone: ZoneInfo, fmt: str = "%H:%M") -> str:
    return value.astimezone(zone).strftime(fmt)

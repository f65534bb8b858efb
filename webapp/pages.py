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

from roombridge import booking, checkin, db
from roombridge.models import Reservation, ReservationSource, ReservationStatus, Room
from webapp.auth import current_user, login_required
from webapp.forms import REPEAT_CHOICES, WEEKDAYS, BookingForm, FinderQuery

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
    busy = booking.day_timeline(session, rooms, day)
    config = _config()
    return {
        room.id: day_segments(busy.get(room.id, []), day, _zone(room), room.bookable_hours or config.BOOKABLE_HOURS)
        for room in rooms
    }


# --- room finder -------------------------------------------------------------------------------


@bp.get("/")
@login_required
def finder():
    session = db.session()
    rooms = _in_scope_rooms(session)
    zone = _zone(rooms[0]) if rooms else ZoneInfo("UTC")
    query = FinderQuery.from_args(request.args, datetime.now(UTC).astimezone(zone))
    buildings = sorted({r.building for r in rooms if r.building})
    floors = sorted({r.floor for r in rooms if r.floor})
    features = sorted({f.lower() for r in rooms for f in (r.features or [])})

    matching = [
        r for r in rooms
        if (query.people is None or (r.capacity or 0) >= query.people)
        and (not query.building or r.building == query.building)
        and (not query.floor or r.floor == query.floor)
        and set(query.features) <= {f.lower() for f in (r.features or [])}
    ]
    free_ids: set[int] = set()
    if not query.errors:
        # The times are wall-clock times in each room's zone: one query per distinct zone, not per room.
        for zone_name in sorted({r.time_zone or "UTC" for r in matching}):
            room_zone = _zone(next(r for r in matching if (r.time_zone or "UTC") == zone_name))
            start = datetime.combine(query.day, query.start, room_zone)
            end = datetime.combine(query.day, query.end, room_zone)
            free = booking.find_free_rooms(session, start, end, people=query.people, features=query.features,
                                           building=query.building or None, floor=query.floor or None)
            free_ids |= {r.id for r in free if (r.time_zone or "UTC") == zone_name}
    matching.sort(key=lambda r: (r.id not in free_ids, r.capacity or 0, r.name))
    return render_template(
        "finder.html", query=query, rooms=matching, free_ids=free_ids,
        timelines=_timelines(session, matching, query.day), buildings=buildings, floors=floors, features=features,
        zones=_zones_by_room(matching),
    )


def _zones_by_room(rooms: list[Room]) -> dict[int, ZoneInfo]:
    return {room.id: _zone(room) for room in rooms}


@bp.get("/rooms/<id:room_id>")
@login_required
def room(room_id: int):
    session = db.session()
    found = session.get(Room, room_id)
    if found is None or not found.in_scope:
        _refuse(404)
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
                         reservation: Reservation | None = None):
    return render_template("book.html", form=form, rooms=rooms, repeat_choices=REPEAT_CHOICES, weekdays=WEEKDAYS,
                           reservation=reservation), status


@bp.get("/book")
@login_required
def book_form():
    rooms = _in_scope_rooms(db.session())
    return _render_booking_form(BookingForm.from_mapping(request.args), rooms)[0]


@bp.post("/book")
@login_required
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
        return _render_booking_form(form, rooms, 409)
    for warning in result.warnings:
        flash(warning, "warning")
    count = len(result.reservations)
    flash(f"{room.name} booked" + (f" ({count} occurrences)." if count > 1 else "."), "success")
    return redirect(url_for("pages.reservation", reservation_id=result.reservations[0].id))


# --- my reservations ---------------------------------------------------------------------------


def _mine(user):
    me = user.email
    return sa.or_(Reservation.organiser_email == me, sa.cast(Reservation.attendees, sa.Text).contains(f'"{me}"'))


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
    rooms = _preload_rooms(session, upcoming + past)
    return render_template("reservations.html", upcoming=upcoming, past=past, status_text=STATUS_TEXT, now=now,
                           user=user, can_change=booking.can_change, zones=_zones_by_room(rooms),
                           can_check_in=lambda r: checkin.can_check_in(r, _config(), now))


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
    may_change = (booking.can_change(found, user.email, user.is_admin)
                  and found.source != ReservationSource.GOOGLE and found.is_live)
    return render_template("reservation.html", reservation=found, zone=_zone(found.room), status=status_payload(found),
                           may_change=may_change, may_check_in=checkin.can_check_in(found, _config(), now),
                           under_way=may_change and found.start_at <= now < found.end_at,
                           extensions=checkin.EXTENSIONS)


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
            attendees=form.attendee_list(), description=form.values["description"],
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


@bp.get("/reservations/<id:reservation_id>/cancel")
@login_required
def cancel_confirm(reservation_id: int):
    found = _changeable(reservation_id)
    return render_template("cancel.html", reservation=found, zone=_zone(found.room))


@bp.post("/reservations/<id:reservation_id>/cancel")
@login_required
def cancel(reservation_id: int):
    _changeable(reservation_id)
    user = current_user()
    try:
        booking.cancel(db.session(), _config(), reservation_id, actor_email=user.email, actor_is_admin=user.is_admin)
    except booking.NotAllowed as exc:
        flash(str(exc), "error")
        return redirect(url_for("pages.reservation", reservation_id=reservation_id))
    flash("Reservation cancelled.", "success")
    return redirect(url_for("pages.reservations"))


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
    return render_template("check_in_link.html", reservation=found, zone=_zone(found.room), message=message,
                           may_check_in=checkin.can_check_in(found, config, datetime.now(UTC)))


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


@bp.app_template_filter("local")
def local_time(value: datetime, zone: ZoneInfo, fmt: str = "%H:%M") -> str:
    return value.astimezone(zone).strftime(fmt)

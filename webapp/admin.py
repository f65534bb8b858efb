"""The admin console (admins only): integration health, rooms in scope, failed jobs, Google set-up help.

Handlers stay thin. Rooms are added, edited and removed by roombridge.rooms; what the pages
show comes from roombridge.channels (health) and roombridge.console (room overviews in a
fixed number of queries, failed jobs). Adding a room asks Google synchronously, since it
must not be saved unless the service account may write to its calendar; removing one stops
its channels synchronously (roombridge.rooms.remove_room). Renewing a channel and resyncing
are enqueued (jobs.channels, roombridge.notifications.request_sync): the page then follows the job's
outcome through the room's status.json (static/admin.js).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import segno
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
from redis.exceptions import RedisError

from roombridge import api_tokens, booking, channels, checkin, console, db, displays, insights, rooms, sweep
from roombridge.booking import quotas
from roombridge.call_budget import KINDS
from roombridge.config import CALENDAR_EVENTS_SCOPE
from roombridge.db import utcnow
from roombridge.gcal import CalendarGateway, GoogleError, call_budget, is_room_calendar
from roombridge.models import CheckinDeadlineAction, LobbyDisplay, Room
from roombridge.queue import redis
from webapp.auth import admin_required, current_user

bp = Blueprint("admin", __name__, url_prefix="/admin")

ADD_FIELDS = ("calendar_id", "name", "capacity", "building", "floor", "features", "time_zone")
EDIT_FIELDS = rooms.EDITABLE_FIELDS
AWAITING = ("channel", "sync")  # what a room page waits for after a button was pressed


def _config():
    return current_app.config["ROOMBRIDGE"]


def _actor() -> str:
    return current_user().email


@dataclass
class RoomForm:
    """Typed-in values, kept as strings for redisplay, and each field's messages (for _macros.html)."""

    values: dict[str, str]
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add_error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    @classmethod
    def from_mapping(cls, data, names: tuple[str, ...]) -> RoomForm:
        return cls(values={name: (data.get(name) or "").strip() for name in names})

    @classmethod
    def for_room(cls, room: Room) -> RoomForm:
        def text(value) -> str:
            if value is None:
                return ""
            return ", ".join(value) if isinstance(value, list) else str(value)

        return cls(values={name: text(getattr(room, name)) for name in EDIT_FIELDS})

    def check_fields(self) -> None:
        """Every room field's own message, by the rules roombridge.rooms applies."""
        details = {k: v for k, v in self.values.items() if k != "calendar_id"}
        for name, message in console.field_errors(details).items():
            self.add_error(name, message)


def _refuse(status: int, title: str, message: str):
    abort(make_response(render_template("error.html", title=title, message=message), status))


def _room_in_scope(room_id: int) -> Room:
    room = db.session().get(Room, room_id)
    if room is None or not room.in_scope:
        _refuse(404, "No such room", "This room is not in scope. It may have been removed.")
    return room


def _gateway() -> CalendarGateway:
    # An admin waits on the page: the call budget's interactive share (roombridge/call_budget.py).
    return CalendarGateway.for_app(kind="write")


@bp.errorhandler(403)
def admins_only(_error):
    # admin_required refuses signed-in non-admins with 403; they get a page of ours, not Werkzeug's.
    return render_template("error.html", title="Admins only",
                           message="The admin console is for the people the organisation named as admins. "
                                   "Ask one of them if you need a room added or changed."), 403


# --- the overview ------------------------------------------------------------------------------


@bp.get("/")
@admin_required
def index():
    session, now = db.session(), utcnow()
    health = channels.integration_health(session, redis(), _config(), now)
    overviews = console.room_overviews(session, rooms.rooms_in_scope(session), now, redis())
    try:
        failed = console.failed_job_count(redis())
        limit_hits = quotas.recent_hits(LIMIT_HITS_SHOWN)
    except RedisError:
        failed, limit_hits = None, None
    try:
        usage, plan = call_budget(current_app).usage(minutes=10), sweep.latest(redis())
    except RedisError:
        usage, plan = None, None
    return render_template("admin/index.html", health=health, overviews=overviews, failed_jobs=failed, now=now,
                           renew_within_hours=_config().CHANNEL_RENEW_WITHIN_SECONDS // 3600, limit_hits=limit_hits,
                           usage=usage, kinds=KINDS, plan=plan, max_age=_config().SAFETY_SYNC_MAX_AGE_SECONDS)


LIMIT_HITS_SHOWN = 10


# --- API tokens: everyone's, and revoking any ------------------------------------------------------


@bp.get("/tokens")
@admin_required
def tokens():
    return render_template("admin/tokens.html", tokens=api_tokens.list_tokens(db.session()), now=utcnow())


@bp.post("/tokens/<id:token_id>/revoke")
@admin_required
def revoke_token(token_id: int):
    revoked = api_tokens.revoke_by_id(db.session(), token_id, actor=_actor())
    if revoked is None:
        _refuse(404, "No such token", "This token does not exist.")
    flash(f"Token {revoked.prefix}… of {revoked.user_email} revoked.", "success")
    return redirect(url_for("admin.tokens"))


# --- adding, editing, removing rooms ------------------------------------------------------------


@bp.get("/rooms/new")
@admin_required
def add_form():
    form = RoomForm.from_mapping(request.args, ADD_FIELDS)
    form.values["time_zone"] = form.values["time_zone"] or "UTC"
    return render_template("admin/add.html", form=form)


@bp.post("/rooms/new")
@admin_required
def add():
    form = RoomForm.from_mapping(request.form, ADD_FIELDS)
    calendar_id = rooms.normalise_calendar_id(form.values["calendar_id"])
    if not calendar_id:
        form.add_error("calendar_id", "Enter the room calendar's address.")
    elif not is_room_calendar(calendar_id):
        form.add_error("calendar_id", f"{calendar_id} is not a room calendar address "
                                      "(they end in @resource.calendar.google.com).")
    form.check_fields()
    if form.errors:
        return render_template("admin/add.html", form=form), 422
    session = db.session()
    try:
        added = rooms.add_room(
            session, _gateway(), _config(), calendar_id, name=form.values["name"], now=utcnow(), actor=_actor(),
            capacity=form.values["capacity"] or None, building=form.values["building"],
            floor=form.values["floor"], features=form.values["features"], time_zone=form.values["time_zone"],
        )
    except rooms.RoomRefused as refused:
        # The other fields passed above, so what is left concerns the calendar itself.
        form.add_error("calendar_id", str(refused))
        return render_template("admin/add.html", form=form), 422
    except GoogleError as error:
        form.add_error("calendar_id", f"Google could not be asked about {calendar_id}: {error}")
        return render_template("admin/add.html", form=form), 502
    room = added.room
    flash(f"{room.name} added: Google grants the service account '{room.access_role}' access. "
          "Its first full sync is on its way.", "success")
    if added.channel_problem:
        flash(f"No push channel yet ({added.channel_problem}); the renewal job keeps trying.", "warning")
    return redirect(url_for("admin.room", room_id=room.id))


def _room_page(room: Room, form: RoomForm, status: int = 200):
    session, now = db.session(), utcnow()
    [overview] = console.room_overviews(session, [room], now, redis())
    awaiting = request.args.get("awaiting")
    return render_template(
        "admin/room.html", room=room, overview=overview, form=form, now=now,
        displays=displays.live_displays(session, room.id), checkin_defaults=_config(),
        open_channels=channels.open_channels(session, room.id), conflicts=console.room_conflicts(session, room, now),
        skipped_events=console.skipped_events(session, room),
        awaiting=awaiting if awaiting in AWAITING else None, status=_status(overview, now),
    ), status


@bp.get("/rooms/<id:room_id>")
@admin_required
def room(room_id: int):
    found = _room_in_scope(room_id)
    return _room_page(found, RoomForm.for_room(found))


@bp.post("/rooms/<id:room_id>")
@admin_required
def edit(room_id: int):
    found = _room_in_scope(room_id)
    form = RoomForm.from_mapping(request.form, EDIT_FIELDS)
    form.check_fields()
    if form.errors:
        return _room_page(found, form, 422)
    try:
        rooms.edit_room(db.session(), found, actor=_actor(), **form.values)
    except rooms.RoomRefused as refused:  # the fields passed one by one; this is about them together
        form.add_error("form", str(refused))
        return _room_page(found, form, 422)
    flash("Room details saved.", "success")
    return redirect(url_for("admin.room", room_id=room_id))


def _optional_minutes(name: str) -> int | None:
    raw = (request.form.get(name) or "").strip()
    return int(raw) if raw.isdigit() else None


@bp.post("/rooms/<id:room_id>/checkin")
@admin_required
def checkin_policy(room_id: int):
    """The room's own check-in policy; empty fields keep the global default."""
    found = _room_in_scope(room_id)
    required = {"yes": True, "no": False}.get(request.form.get("required", ""))
    action = request.form.get("action", "")
    try:
        checkin.set_room_policy(
            db.session(), found, required=required, opens_minutes=_optional_minutes("opens"),
            grace_minutes=_optional_minutes("grace"),
            action=CheckinDeadlineAction(action) if action in {a.value for a in CheckinDeadlineAction} else None,
            actor=_actor())
    except booking.InvalidBooking as exc:
        flash(" ".join(m for messages in exc.errors.values() for m in messages), "error")
    else:
        flash("Check-in settings saved.", "success")
    return redirect(url_for("admin.room", room_id=room_id) + "#checkin")


@bp.post("/rooms/<id:room_id>/displays")
@admin_required
def create_display(room_id: int):
    """A new door display link: its URL and QR code are shown on this answer only (the token is stored hashed)."""
    found = _room_in_scope(room_id)
    new = displays.create(db.session(), found.calendar_id, actor=_actor())
    return _link_created(displays.display_url(_config(), new.token), new.record.prefix, found.name,
                         url_for("admin.room", room_id=room_id), found.name,
                         f"Anyone with it can see this room's bookings today and book, check in or end meetings in "
                         f"{found.name}.")


def _link_created(url: str, prefix: str, place: str, back: str, back_label: str, reach: str):
    """The one page that shows a new display or lobby link, with its QR code; never shown again."""
    qr = segno.make(url, error="m").svg_data_uri(scale=6, dark="#000", light="#fff")
    return render_template("admin/display_created.html", url=url, qr=qr, prefix=prefix, place=place, back=back,
                           back_label=back_label, reach=reach)


@bp.post("/rooms/<id:room_id>/displays/<prefix>/revoke")
@admin_required
def revoke_display(room_id: int, prefix: str):
    found = _room_in_scope(room_id)
    count = displays.revoke(db.session(), found.calendar_id, prefix=prefix, actor=_actor())
    flash(f"Display link {prefix}… revoked." if count else "No such display link.", "success" if count else "error")
    return redirect(url_for("admin.room", room_id=room_id))


@bp.get("/lobbies")
@admin_required
def lobbies():
    session = db.session()
    return render_template("admin/lobbies.html", lobbies=displays.live_lobbies(session),
                           buildings=insights.buildings(session), now=utcnow())


@bp.post("/lobbies")
@admin_required
def create_lobby():
    """A new lobby-screen link: its URL and QR code are shown on this answer only (the token is stored hashed)."""
    try:
        new = displays.create_lobby(db.session(), request.form.get("building", ""), actor=_actor())
    except displays.UnknownBuilding:
        flash("No room in that building.", "error")
        return redirect(url_for("admin.lobbies"))
    return _link_created(displays.lobby_url(_config(), new.token), new.record.prefix,
                         f"the lobby of {new.record.building}", url_for("admin.lobbies"), "Lobby screens",
                         "Anyone with it can see which rooms of this building are free or busy, and until when.")


@bp.post("/lobbies/<int:lobby_id>/revoke")
@admin_required
def revoke_lobby(lobby_id: int):
    session = db.session()
    found = session.get(LobbyDisplay, lobby_id)
    count = found is not None and displays.revoke_lobby(session, found.building, prefix=found.prefix, actor=_actor())
    flash(f"Lobby link {found.prefix}… revoked." if count else "No such lobby link.", "success" if count else "error")
    return redirect(url_for("admin.lobbies"))


@bp.get("/rooms/<id:room_id>/remove")
@admin_required
def remove_confirm(room_id: int):
    found = _room_in_scope(room_id)
    return render_template("admin/remove.html", room=found,
                           future=rooms.future_reservations(db.session(), found, utcnow()))


@bp.post("/rooms/<id:room_id>/remove")
@admin_required
def remove(room_id: int):
    found = _room_in_scope(room_id)
    choice = request.form.get("future")
    future = rooms.future_reservations(db.session(), found, utcnow())
    if future and choice not in ("cancel", "keep"):
        flash("Say what to do with its future reservations: cancel them or keep them.", "error")
        return render_template("admin/remove.html", room=found, future=future), 422
    try:
        gateway = _gateway()
    except GoogleError as error:
        flash(f"Google is not set up here ({error}); the room was not removed.", "error")
        return redirect(url_for("admin.room", room_id=room_id))
    removal = rooms.leave_scope(db.session(), _config(), gateway, found, utcnow(), cancel_future=choice == "cancel",
                                actor=_actor())
    if not removal.removed:
        flash(f"{found.name} stays in scope: {len(removal.not_deleted)} event(s) could not be deleted from its "
              f"calendar ({removal.cancelled} were). Try removing it again.", "error")
        return redirect(url_for("admin.room", room_id=room_id))
    done = (f"{removal.cancelled} future reservation(s) cancelled and their events deleted"
            if choice == "cancel" else f"{removal.kept} future reservation(s) kept, their events left on its calendar")
    flash(f"{found.name} removed from scope: its push channel is stopped and it is no longer synced; {done}.",
          "success")
    for channel in removal.channels_pending_stop:
        flash(f"Stopping channel {channel.id} failed ({channel.stop_error}); it will be retried.", "warning")
    return redirect(url_for("admin.index"))


# --- renew and resync: enqueued; the room page follows them ----------------------------------------


@bp.post("/rooms/<id:room_id>/renew")
@admin_required
def renew(room_id: int):
    from jobs.channels import renew_room_channel

    found = _room_in_scope(room_id)
    try:
        renew_room_channel.enqueue(found.id, _actor())
    except RedisError:
        flash("The job queue cannot be reached just now; the channel was not renewed. Try again shortly.", "error")
        return redirect(url_for("admin.room", room_id=room_id))
    flash("Channel renewal requested: a new channel replaces the current one in a moment.", "success")
    return redirect(url_for("admin.room", room_id=room_id, awaiting="channel"))


@bp.post("/rooms/<id:room_id>/sync")
@admin_required
def resync(room_id: int):
    from roombridge.notifications import request_sync

    found = _room_in_scope(room_id)
    full = request.form.get("kind") == "full"
    try:
        enqueued = request_sync(found.id, full=full)
    except RedisError:
        flash("The job queue cannot be reached just now; no sync was requested. Try again shortly.", "error")
        return redirect(url_for("admin.room", room_id=room_id))
    kind = "Full resync" if full else "Incremental sync"
    if enqueued:
        flash(f"{kind} requested.", "success")
    else:
        # request_sync coalesces: the waiting job reads the full flag when it starts.
        then = "read the whole window again" if full else "pick up the latest changes"
        flash(f"A sync of this room is already waiting; it will {then}.", "success")
    return redirect(url_for("admin.room", room_id=room_id, awaiting="sync"))


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _status(overview: console.RoomOverview, now: datetime) -> dict:
    channel, sync = overview.channel, overview.sync
    return {
        "room_id": overview.room.id,
        "channel": None if channel is None else {
            "id": channel.id, "expiration": _when(channel.expiration),
            "expiration_text": admin_when(channel.expiration, now), "created_at": _when(channel.created_at),
        },
        "last_push_text": admin_when(overview.last_push_at, now, "never"),
        "sync": {
            "count": sync.sync_count if sync else 0,
            "last_sync_at": _when(sync.last_sync_at if sync else None),
            "last_sync_text": admin_when(sync.last_sync_at if sync else None, now, "never"),
            "last_full_sync_text": admin_when(sync.last_full_sync_at if sync else None, now, "never"),
            "last_error": sync.last_error if sync else None,
            "last_error_at": _when(sync.last_error_at if sync else None),
        },
        "problems": overview.problems,
    }


@bp.get("/rooms/<id:room_id>/status.json")
@admin_required
def room_status(room_id: int):
    found = _room_in_scope(room_id)
    now = utcnow()
    [overview] = console.room_overviews(db.session(), [found], now, redis())
    response = jsonify(_status(overview, now))
    response.headers["Cache-Control"] = "no-store"
    return response


# --- failed jobs ----------------------------------------------------------------------------------


@bp.get("/jobs")
@admin_required
def failed_jobs():
    try:
        jobs = console.failed_jobs(redis())
    except RedisError:
        jobs = None
    return render_template("admin/jobs.html", jobs=jobs, now=utcnow())


@bp.post("/jobs/<queue_name>/<job_id>/retry")
@admin_required
def retry_job(queue_name: str, job_id: str):
    try:
        retried = console.retry_failed_job(redis(), queue_name, job_id)
    except RedisError:
        flash("The job queue cannot be reached just now. Try again shortly.", "error")
        return redirect(url_for("admin.failed_jobs"))
    if retried:
        current_app.logger.info("%s re-queued failed job %s on %s", _actor(), job_id, queue_name)
        flash(f"Job {job_id} is back on the {queue_name} queue.", "success")
    else:
        flash(f"Job {job_id} is no longer among the failed jobs (retried already, or expired).", "warning")
    return redirect(url_for("admin.failed_jobs"))


# --- set-up help and the access check -------------------------------------------------------------


def service_account_email() -> str | None:
    """The key file's client_email (nothing else of the key is read here, and none of it is shown)."""
    path = _config().GOOGLE_SERVICE_ACCOUNT_FILE
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as key_file:
            return json.load(key_file).get("client_email")
    except (OSError, ValueError):
        return None


def _setup_page(reports=None, problem: str | None = None, status: int = 200):
    config = _config()
    return render_template(
        "admin/setup.html", config=config, scope=CALENDAR_EVENTS_SCOPE, service_account=service_account_email(),
        webhook_address=channels.webhook_address(config), reports=reports, problem=problem,
        room_count=len(rooms.rooms_in_scope(db.session())),
    ), status


@bp.get("/setup")
@admin_required
def setup():
    return _setup_page()


@bp.post("/setup/check")
@admin_required
def check_access():
    session = db.session()
    try:
        gateway = _gateway()
    except GoogleError as error:
        return _setup_page(problem=f"Google is not set up here: {error}.", status=503)
    reports = rooms.check_rooms_access(session, gateway, rooms.rooms_in_scope(session))
    return _setup_page(reports=reports)


# --- template helpers -----------------------------------------------------------------------------


def _ago(delta_seconds: float) -> str:
    """'6 days 23 hours', '2 hours 5 minutes', '4 minutes': the two largest units, rounded down."""
    seconds = abs(int(delta_seconds))
    units = (("day", 86400), ("hour", 3600), ("minute", 60))
    for index, (unit, size) in enumerate(units):
        if seconds >= size:
            count, rest = divmod(seconds, size)
            text = f"{count} {unit}{'s' if count != 1 else ''}"
            if index + 1 < len(units) and rest >= units[index + 1][1]:
                smaller, smaller_size = units[index + 1]
                part = rest // smaller_size
                text += f" {part} {smaller}{'s' if part != 1 else ''}"
            return text
    return "under a minute"


@bp.app_template_filter("admin_when")
def admin_when(moment: datetime | None, now: datetime, missing: str = "none") -> str:
    """'2025-03-22 19:14:43 UTC (in 6 days 23 hours)': an instant and how far it is from now."""
    if moment is None:
        return missing
    delta = (moment - now).total_seconds()
    relative = f"in {_ago(delta)}" if delta > 0 else f"{_ago(delta)} ago"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({relative})"


@bp.app_template_filter("minute_text")
def minute_text(epoch_seconds: float, seconds: bool = False) -> str:
    """An epoch moment of Redis' clock as '2025-03-22 19:14' (UTC), or with its seconds."""
    return f"{datetime.fromtimestamp(epoch_seconds, UTC):%Y-%m-%d %H:%M{':%S' if seconds else ''}}"

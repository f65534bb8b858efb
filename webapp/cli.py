"""The `flask --app wsgi ...` commands: schema, worker, scheduler, and the admin verbs."""

from __future__ import annotations

import functools

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from roombridge.text import unstorable_fields

db_cli = AppGroup("db", help="Create or upgrade the database schema.")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Create or upgrade the schema to REVISION (default: the newest)."""
    from roombridge import migrate  # Alembic loads only for schema commands

    migrate.upgrade(current_app, revision)
    click.echo(f"database at {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    from roombridge import migrate  # Alembic loads only for schema commands

    migrate.downgrade(current_app, revision)


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
def db_revision(message: str) -> None:
    """Write a new migration from the difference between the models and the database."""
    from roombridge import migrate  # Alembic loads only for schema commands

    migrate.revision(current_app, message)


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.argument("queues", nargs=-1)
def worker_command(burst: bool, queues: tuple[str, ...]) -> None:
    """Run an RQ worker on the named queues (default: all, most urgent first)."""
    from jobs import set_worker_app
    from jobs.worker import Worker
    from roombridge.queue import QUEUE_NAMES, queue

    app = current_app._get_current_object()
    set_worker_app(app)
    queues_to_watch = [queue(name) for name in (queues or QUEUE_NAMES)]
    worker = Worker(queues_to_watch, connection=queues_to_watch[0].connection)
    worker.work(burst=burst, with_scheduler=True)


@click.command("scheduler")
def scheduler_command() -> None:
    """Run the periodic scheduler (only one leads at a time, see jobs/schedule.py); SIGTERM ends it cleanly."""
    from jobs.schedule import run_scheduler, stop_on_termination

    run_scheduler(current_app._get_current_object(), stop=stop_on_termination())


tokens_cli = AppGroup("tokens", help="API tokens for the JSON API (stored hashed).")


@tokens_cli.command("create")
@click.argument("email")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None,
              help="The token stops working after this many days (default: when revoked).")
def tokens_create(email: str, expires_in_days: int | None) -> None:
    """Make an API token for EMAIL and print it: it is shown this once only."""
    from datetime import timedelta

    from roombridge import api_tokens, db

    life = timedelta(days=expires_in_days) if expires_in_days else None
    try:
        new = api_tokens.create(db.session(), email, actor="cli", expires_in=life)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from exc
    click.echo(new.token)


@tokens_cli.command("revoke")
@click.argument("token_or_prefix")
@click.option("--email", help="Only the tokens of this user.")
def tokens_revoke(token_or_prefix: str, email: str | None) -> None:
    """Revoke a token, given whole or by the prefix `tokens list` shows."""
    from roombridge import api_tokens, db

    count = api_tokens.revoke(db.session(), token_or_prefix, email=email, actor="cli")
    if not count:
        raise click.ClickException(f"no live token matches {token_or_prefix!r}")
    click.echo(f"revoked {count} token(s)")


@tokens_cli.command("list")
@click.option("--email", help="Only the tokens of this user.")
def tokens_list(email: str | None) -> None:
    """Every token: owner, prefix, created, last used, revoked or expired."""
    from roombridge import api_tokens, db
    from roombridge.db import utcnow

    now = utcnow()
    for t in api_tokens.list_tokens(db.session(), email):
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}Z" if t.last_used_at else "never used"
        if t.revoked_at:
            state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}Z"
        elif t.expires_at:
            state = f"{'expired' if t.expires_at <= now else 'live, expires'} {t.expires_at:%Y-%m-%d %H:%M}Z"
        else:
            state = "live"
        click.echo(f"{t.user_email}\t{t.prefix}\tcreated {t.created_at:%Y-%m-%d %H:%M}Z\t{used}\t{state}")


# --- rooms, channels and sync (issue #7): the admin console's verbs for the command line ---------

rooms_cli = AppGroup("rooms", help="Rooms in scope: add, list, remove.")
channels_cli = AppGroup("channels", help="Google push channels: list, renew.")


def _google(kind: str):
    """The session, the Calendar gateway for calls of `kind`, and the settings; a clean error without Google."""
    from roombridge import db
    from roombridge.gcal import CalendarGateway, GoogleError

    try:
        gateway = CalendarGateway.for_app(kind=kind)
    except GoogleError as error:
        raise click.ClickException(str(error)) from error
    return db.session(), gateway, current_app.config["ROOMBRIDGE"]


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def _room_or_fail(session, email: str, in_scope: bool = True):
    from roombridge.rooms import find_room

    room = find_room(session, email)
    if room is None or (in_scope and not room.in_scope):
        raise click.ClickException(f"{email} is not a room in scope (see `rooms list`)")
    return room


@rooms_cli.command("add")
@click.argument("email")
@click.option("--name", required=True, help="What people call the room.")
@click.option("--capacity", type=int)
@click.option("--building")
@click.option("--floor")
@click.option("--features", help="Comma-separated, e.g. projector,whiteboard")
@click.option("--time-zone", default="UTC", show_default=True, help="IANA name, e.g. Europe/London")
def rooms_add(email, name, capacity, building, floor, features, time_zone) -> None:
    """Bring the room calendar EMAIL into scope, once Google confirms we may write to it."""
    from roombridge import rooms
    from roombridge.db import utcnow
    from roombridge.gcal import GoogleError

    session, gateway, config = _google("write")  # someone at the terminal waits, as in the console
    try:
        added = rooms.add_room(session, gateway, config, email, name=name, capacity=capacity, building=building,
                               floor=floor, features=features, time_zone=time_zone, now=utcnow(), actor="cli")
    except rooms.RoomRefused as refused:
        raise click.ClickException(str(refused)) from refused
    except GoogleError as error:
        raise click.ClickException(str(error)) from error
    room = added.room
    click.echo(f"added {room.calendar_id} ({room.name}); Google grants '{room.access_role}'")
    if added.channel:
        click.echo(f"channel {added.channel.id} expires {_when(added.channel.expiration)}")
    else:
        click.echo(f"no channel yet ({added.channel_problem}); the renewal job keeps trying", err=True)
    click.echo("first full sync requested")


@rooms_cli.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include rooms taken out of scope.")
def rooms_list(show_all: bool) -> None:
    """Rooms with their access, channel and health."""
    import sqlalchemy as sa

    from roombridge import channels, db
    from roombridge.db import utcnow
    from roombridge.models import Room

    session, now = db.session(), utcnow()
    query = sa.select(Room).order_by(Room.calendar_id)
    if not show_all:
        query = query.where(Room.in_scope.is_(True))
    found = list(session.scalars(query))
    if not found:
        click.echo("no rooms in scope; add one with `rooms add EMAIL --name NAME`")
        return
    for room in found:
        channel = channels.current_channel(session, room, now)
        expiry = _when(channel.expiration) if channel else "none"
        scope = "" if room.in_scope else " [out of scope]"
        click.echo(f"{room.calendar_id}\t{room.name}\tcapacity {room.capacity or '-'}\trole {room.access_role or '-'}"
                   f"\tchannel expires {expiry}\t{room.health_error or 'healthy'}{scope}")


@rooms_cli.command("remove")
@click.argument("email")
@click.option("--cancel-future/--keep-future", "cancel_future", default=False, show_default=True,
              help="Cancel the room's future reservations (their events are deleted from its calendar and, in "
                   "room mode, people are mailed), or keep them (the default: their events stay on the room's "
                   "calendar, and Roombridge can no longer change or delete them).")
def rooms_remove(email: str, cancel_future: bool) -> None:
    """Take the room EMAIL out of scope: its channels are stopped and it is no longer synced.

    Never asks: without an option its future reservations are kept (nothing is deleted).
    """
    from roombridge import rooms
    from roombridge.db import utcnow

    session, gateway, config = _google("write")
    room = _room_or_fail(session, email)
    removal = rooms.leave_scope(session, config, gateway, room, utcnow(), cancel_future=cancel_future, actor="cli")
    if not removal.removed:
        for reservation_id, why in removal.not_deleted:
            click.echo(f"reservation {reservation_id}: its event could not be deleted ({why})", err=True)
        raise click.ClickException(
            f"{room.calendar_id} stays in scope: {len(removal.not_deleted)} event(s) could not be deleted "
            f"({removal.cancelled} were); run the same command again")
    if cancel_future:
        click.echo(f"cancelled {removal.cancelled} future reservation(s) and deleted their events")
    else:
        click.echo(f"kept {removal.kept} future reservation(s); their events stay on the room's calendar "
                   "(--cancel-future cancels them)")
    click.echo(f"removed {room.calendar_id} from scope")
    for channel in removal.channels_pending_stop:
        click.echo(f"stopping channel {channel.id} failed ({channel.stop_error}); it will be retried", err=True)


@channels_cli.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include stopped channels.")
def channels_list(show_all: bool) -> None:
    """Watch channels: room, expiry, state, last push."""
    import sqlalchemy as sa

    from roombridge import db, notifications
    from roombridge.db import utcnow
    from roombridge.models import WatchChannel
    from roombridge.queue import redis

    session, now = db.session(), utcnow()
    query = sa.select(WatchChannel).order_by(WatchChannel.room_id, WatchChannel.created_at)
    if not show_all:
        query = query.where(WatchChannel.stopped_at.is_(None))
    found = list(session.scalars(query))
    # Pushes since the room's last sync are still counted in Redis only.
    pending = notifications.pending_pushes(redis(), [c.id for c in found])
    for channel in found:
        if channel.stopped_at:
            state = "stopped"
        elif channel.stop_pending:
            state = f"stop pending ({channel.stop_error})"
        else:
            state = "live" if channel.is_live(now) else "expired"
        recent = pending[channel.id]
        last_push = max(filter(None, (channel.last_push_at, recent.last_push_at)), default=None)
        click.echo(f"{channel.id}\t{channel.room.calendar_id}\texpires {_when(channel.expiration)}\t{state}"
                   f"\tlast push {_when(last_push)}\tpushes {channel.push_count + recent.count}")


@channels_cli.command("renew")
@click.option("--room", "room_email", help="Only this room's channel.")
@click.option("--due-only", is_flag=True, help="Only what the periodic job would renew now.")
def channels_renew(room_email: str | None, due_only: bool) -> None:
    """Replace channels now: a new channel first, then the old one stopped."""
    from roombridge import channels
    from roombridge.db import utcnow
    from roombridge.gcal import GoogleError
    from roombridge.rooms import rooms_in_scope

    session, gateway, config = _google("renewal")
    if due_only and not room_email:
        report = channels.renew_due(session, gateway, config, utcnow())
        click.echo(f"renewal pass: {report.as_dict() or 'nothing due'}")
        return
    targets = [_room_or_fail(session, room_email)] if room_email else rooms_in_scope(session)
    failures = 0
    for room in targets:
        try:
            channel = channels.renew_room(session, gateway, room, config, utcnow(), actor="cli")
        except (channels.ChannelRefused, GoogleError) as error:
            failures += 1
            click.echo(f"{room.calendar_id}: {error}", err=True)
            continue
        click.echo(f"{room.calendar_id}: channel {channel.id} expires {_when(channel.expiration)}")
    if failures:
        raise click.ClickException(f"{failures} channel(s) could not be renewed")


@click.command("sync")
@with_appcontext
@click.argument("room_email")
@click.option("--full", is_flag=True, help="Drop the sync token and read the whole window again.")
def sync_command(room_email: str, full: bool) -> None:
    """Mirror ROOM_EMAIL from Google now, in this process."""
    from roombridge.gcal import GoogleError
    from roombridge.queue import redis
    from roombridge.sync import LOCK_WAIT_SECONDS, RoomLock, sync_room_now

    session, gateway, config = _google("sync")
    room = _room_or_fail(session, room_email)
    # The same per-room lock as the workers: never two syncs of one room at once.
    lock = RoomLock(redis(), room.id)
    if not lock.acquire(wait_seconds=LOCK_WAIT_SECONDS):
        raise click.ClickException(f"{room.calendar_id} is being synced by a worker; try again shortly")
    try:
        report = sync_room_now(session, gateway, room, config, full=full)
    except GoogleError as error:
        raise click.ClickException(str(error)) from error
    finally:
        lock.release()
    click.echo(f"synced {room.calendar_id} ({'full' if full else 'incremental'}): {report}")


google_cli = AppGroup("google", help="The Google Calendar call budget shared by every process, and the call log.")


@google_cli.command("usage")
@click.option("--minutes", default=10, show_default=True, help="How many minutes back.")
def google_usage(minutes: int) -> None:
    """Calls per minute by kind against the budget, the shared pause, Google's last rate-limit answers."""
    from datetime import UTC, datetime

    from redis.exceptions import RedisError

    from roombridge import sweep
    from roombridge.call_budget import KINDS
    from roombridge.gcal import call_budget
    from roombridge.queue import redis

    try:
        usage = call_budget(current_app).usage(minutes=minutes)
    except RedisError as error:
        raise click.ClickException(f"the call budget lives in Redis, which did not answer: {error}") from error
    reserves = ", ".join(f"{kind} leaves {usage.reserves[kind]}" for kind in KINDS[1:])
    click.echo(f"budget {usage.calls_per_minute} calls/minute, burst {usage.burst} ({reserves}); "
               f"{usage.tokens_left:.1f} tokens left now")
    click.echo(f"pause: {usage.pause_left:.1f}s left (level {usage.pause_level})" if usage.pause_left
               else f"pause: none (level {usage.pause_level})")
    click.echo("minute (UTC)\t" + "\t".join(KINDS) + "\ttotal\tof budget\trefused")
    for row in usage.minutes:
        at = datetime.fromtimestamp(row.minute * 60, UTC)
        click.echo(f"{at:%Y-%m-%d %H:%M}\t" + "\t".join(str(row.granted[k]) for k in KINDS)
                   + f"\t{row.total}\t{row.total / usage.calls_per_minute:.0%}\t{sum(row.refused.values())}")
    click.echo(f"last rate-limit answers: {len(usage.rate_limits) or 'none'}")
    for answer in usage.rate_limits:
        click.echo(f"{datetime.fromtimestamp(answer.at, UTC):%Y-%m-%d %H:%M:%S}Z\t{answer.kind}\t{answer.status} "
                   f"{answer.reason}\t{answer.what}\tpaused {answer.pause_seconds:.1f}s")
    click.echo(f"calls refused by the allowlist (not an in-scope room): {usage.refused_by_allowlist} (zero expected)"
               + (f"; the last for {usage.last_refused_calendar}" if usage.last_refused_calendar else ""))
    plan = sweep.latest(redis())
    if plan is None:
        click.echo("safety net: not planned yet")
    else:
        cycle = "none synced yet" if plan.cycle_seconds is None else f"{plan.cycle_seconds / 60:.1f} min"
        click.echo(f"safety net: {plan.rooms} rooms, every one within {plan.max_age_seconds / 60:.0f} min; "
                   f"stalest room last synced {cycle} ago; {plan.never_synced} never synced, {plan.overdue} past "
                   f"the age; sweep calls needed {plan.needed_per_minute:.1f}/min, budget leaves "
                   f"{plan.left_per_minute:.1f}/min")
        if plan.shortfall:
            click.echo(f"FALLING BEHIND: {plan.shortfall}")


@google_cli.command("calls")
@click.option("--room", "room_email", help="One room's calls (its calendar e-mail), newest first.")
@click.option("--hours", default=24, show_default=True, type=click.IntRange(1), help="How far back.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="With --room: how many calls; without: how many rooms.")
def google_calls(room_email: str | None, hours: int, limit: int) -> None:
    """The Google call log: a summary with what the service account can and cannot do, or one room's calls."""
    from datetime import timedelta

    from roombridge import call_log, db
    from roombridge.config import CALENDAR_EVENTS_SCOPE
    from roombridge.db import utcnow

    session, since = db.session(), utcnow() - timedelta(hours=hours)
    if room_email:
        room = _room_or_fail(session, room_email, in_scope=False)
        calls = call_log.room_calls(session, room.id, since=since, per_page=limit).calls
        click.echo(f"{room.calendar_id}: {len(calls)} call(s) in the last {hours} hour(s), newest first")
        click.echo("when (UTC)	operation	kind	outcome	status	ms")
        for c in calls:
            click.echo(f"{_when(c.at)}	{c.operation}	{c.kind}	{c.outcome}	{c.status or '-'}	{c.duration_ms}")
        return
    found = call_log.summary(session, since, top=limit)
    config = current_app.config["ROOMBRIDGE"]
    who = f"the booking user {config.GOOGLE_DELEGATED_USER}" if config.delegated_mode else "the service account"
    click.echo(f"least privilege: {who} uses the scope {CALENDAR_EVENTS_SCOPE} on {found.rooms_in_scope} room "
               f"calendar(s) in scope, and no other calendar")
    click.echo(f"calls refused by the allowlist in the last {hours} hour(s): {found.refused} (zero expected)"
               + ("".join(f"\n  REFUSED {calendar}: {count}" for calendar, count in found.refused_calendars)))
    click.echo(f"calls on a calendar not a room's (a person's): {found.non_room_calls}")
    click.echo(f"{found.total} call(s) on {found.rooms_called} room(s); by outcome: "
               + (", ".join(f"{o} {n}" for o, n in sorted(found.by_outcome.items())) or "none"))
    for kind, counts in sorted(found.by_kind.items()):
        click.echo(f"  {kind}: " + ", ".join(f"{o} {n}" for o, n in sorted(counts.items())))
    click.echo("room	calls	not ok")
    for r in found.top_rooms:
        click.echo(f"{r.calendar_id or r.room_id}\t{r.calls}\t{r.not_ok}")


displays_cli = AppGroup("displays", help="Room display links (a room's door page, no sign-in).")


@displays_cli.command("create")
@click.argument("room_email")
def displays_create(room_email: str) -> None:
    """Make a display link for the room and print its full URL (last line): it is shown this once only."""
    from roombridge import db, displays

    try:
        new = displays.create(db.session(), room_email, actor="cli")
    except displays.UnknownRoom as exc:
        raise click.BadParameter(str(exc), param_hint="ROOM_EMAIL") from exc
    click.echo(f"display link {new.record.prefix}... for {room_email}; open it on the room's tablet:")
    click.echo(displays.display_url(current_app.config["ROOMBRIDGE"], new.token))


@displays_cli.command("revoke")
@click.argument("room_email")
@click.option("--prefix", help="Only the link with this prefix (as the admin console shows it).")
def displays_revoke(room_email: str, prefix: str | None) -> None:
    """Revoke the room's display links: they answer 404 from now on."""
    from roombridge import db, displays

    try:
        count = displays.revoke(db.session(), room_email, prefix=prefix, actor="cli")
    except displays.UnknownRoom as exc:
        raise click.BadParameter(str(exc), param_hint="ROOM_EMAIL") from exc
    if not count:
        raise click.ClickException(f"no live display link for {room_email}")
    click.echo(f"revoked {count} display link(s)")


lobbies_cli = AppGroup("lobbies", help="Lobby screen links (a building's overview, no sign-in).")


@lobbies_cli.command("create")
@click.argument("building")
def lobbies_create(building: str) -> None:
    """Make a lobby-screen link for the building and print its full URL (last line): it is shown this once only."""
    from roombridge import db, displays

    try:
        new = displays.create_lobby(db.session(), building, actor="cli")
    except displays.UnknownBuilding as exc:
        raise click.BadParameter(str(exc), param_hint="BUILDING") from exc
    click.echo(f"lobby link {new.record.prefix}... for {new.record.building}; open it on the lobby screen:")
    click.echo(displays.lobby_url(current_app.config["ROOMBRIDGE"], new.token))


@lobbies_cli.command("revoke")
@click.argument("building")
@click.option("--prefix", help="Only the link with this prefix (as the admin console shows it).")
def lobbies_revoke(building: str, prefix: str | None) -> None:
    """Revoke the building's lobby links: they answer 404 from now on."""
    from roombridge import db, displays

    count = displays.revoke_lobby(db.session(), building, prefix=prefix, actor="cli")
    if not count:
        raise click.ClickException(f"no live lobby link for {building}")
    click.echo(f"revoked {count} lobby link(s)")


def _refusing_unstorable_text(command: click.Command) -> click.Command:
    """`command`, and every command of a group, refuse arguments the database cannot store.

    A lone surrogate is what Python makes of command-line bytes that are not UTF-8; NUL comes
    from scripts calling the commands in-process. One usage error (exit status 2) names the option.
    """
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _refusing_unstorable_text(sub)
        return command
    callback = command.callback
    if callback is None or getattr(callback, "refuses_unstorable_text", False):
        return command

    @functools.wraps(callback)
    def checked(*args, **kwargs):
        bad = unstorable_fields(kwargs.items())
        if bad:
            name = bad[0]
            param = next((p for p in command.params if p.name == name), None)
            raise click.BadParameter("must not contain NUL characters or undecodable bytes",
                                     param=param, param_hint=None if param else name)
        return callback(*args, **kwargs)

    checked.refuses_unstorable_text = True
    command.callback = checked
    return command


def init_app(app: Flask) -> None:
    for command in (displays_cli, lobbies_cli, tokens_cli, db_cli, worker_command, scheduler_command, rooms_cli,
                    channels_cli, sync_command, google_cli):
        app.cli.add_command(_refusing_unstorable_text(command))

"""Calendar feeds on the web: the ICS link itself, a person's own feed page, the admins' room feeds,
and `flask --app wsgi feeds create|revoke`.

The link needs no sign-in (calendar clients cannot sign in): its secret token is the access.
It answers with an ETag, and 304 to a client that already holds that version
(roombridge.feeds.etag costs one aggregate query). A revoked or unknown link answers 404.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import click
import sqlalchemy as sa
from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask.cli import AppGroup

from roombridge import db, feeds
from roombridge.models import Room
from webapp.auth import admin_required, current_user, login_required
from webapp.security import external_url

bp = Blueprint("feeds", __name__)

ICS_TYPE = "text/calendar; charset=utf-8"


def feed_path(token: str) -> str:
    return f"/feeds/{token}.ics"


@bp.get("/feeds/<token>.ics")
def feed(token: str):
    session = db.session()
    found = feeds.resolve(session, token)
    if found is None:
        abort(404)
    tag = feeds.etag(session, found)
    # Clients must ask again each time (no-cache), and an unchanged feed is then one cheap 304.
    headers = {"ETag": f'"{tag}"', "Cache-Control": "private, no-cache"}
    if request.if_none_match.contains(tag):
        return Response(status=304, headers=headers)
    return Response(feeds.render(session, found), headers=headers, content_type=ICS_TYPE)


def _link(token: str) -> str:
    return external_url("feeds.feed", token=token)


# --- a person's own feed ----------------------------------------------------------------------


@bp.get("/feeds")
@login_required
def my_feed():
    user = current_user()
    return render_template("feeds.html", live=feeds.live_feeds(db.session(), person_email=user.email), new_link=None)


@bp.post("/feeds")
@login_required
def my_feed_change():
    user, session = current_user(), db.session()
    if request.form.get("action") == "revoke":
        count = feeds.revoke(session, person_email=user.email, actor=user.email)
        flash(f"Revoked {count} feed link(s): calendars subscribed to them stop updating.", "success")
        return redirect(url_for("feeds.my_feed"))
    new = feeds.create(session, person_email=user.email, actor=user.email)
    return render_template("feeds.html", live=feeds.live_feeds(session, person_email=user.email),
                           new_link=_link(new.token))


# --- room feeds, on the admin console ---------------------------------------------------------


def _room_feeds_page(new_link: str | None = None, new_room: Room | None = None):
    session = db.session()
    rooms = list(session.scalars(sa.select(Room).where(Room.in_scope.is_(True)).order_by(Room.name)))
    live: dict[int, list] = {}
    for record in feeds.live_feeds(session):
        live.setdefault(record.room_id, []).append(record)
    return render_template("admin/feeds.html", rooms=rooms, live=live, new_link=new_link, new_room=new_room)


@bp.get("/admin/feeds")
@admin_required
def room_feeds():
    return _room_feeds_page()


@bp.post("/admin/feeds/<id:room_id>")
@admin_required
def room_feed_change(room_id: int):
    session, actor = db.session(), current_user().email
    room = session.get(Room, room_id)
    if room is None or not room.in_scope:
        abort(404)
    if request.form.get("action") == "revoke":
        count = feeds.revoke(session, room_calendar_id=room.calendar_id, actor=actor)
        flash(f"Revoked {count} feed link(s) of {room.name}.", "success")
        return redirect(url_for("feeds.room_feeds"))
    new = feeds.create(session, room_calendar_id=room.calendar_id, actor=actor)
    return _room_feeds_page(new_link=_link(new.token), new_room=room)


# --- the command line -------------------------------------------------------------------------

feeds_cli = AppGroup("feeds", help="ICS feed links of a room or a person (stored hashed).")


def _subject(room: str | None, person: str | None) -> dict:
    if (room is None) == (person is None):
        raise click.UsageError("give exactly one of --room ROOM_EMAIL or --person EMAIL")
    return {"room_calendar_id": room} if room else {"person_email": person}


@feeds_cli.command("create")
@click.option("--room", metavar="ROOM_EMAIL", help="The room calendar's e-mail.")
@click.option("--person", metavar="EMAIL", help="A person: their reservations as organiser or attendee.")
def feeds_create(room: str | None, person: str | None) -> None:
    """Make a feed link and print it (last line): it is shown this once only."""
    try:
        new = feeds.create(db.session(), **_subject(room, person), actor="cli")
    except (ValueError, LookupError) as exc:
        raise click.ClickException(str(exc)) from exc
    base = urlsplit(current_app.config["ROOMBRIDGE"].WEBHOOK_BASE_URL)
    click.echo(f"feed {new.record.prefix}… of {room or person}; subscribe to:")
    click.echo(f"{base.scheme}://{base.netloc}{feed_path(new.token)}")


@feeds_cli.command("revoke")
@click.option("--room", metavar="ROOM_EMAIL")
@click.option("--person", metavar="EMAIL")
def feeds_revoke(room: str | None, person: str | None) -> None:
    """Revoke every live feed link of the room or person: they answer 404 from now on."""
    try:
        count = feeds.revoke(db.session(), **_subject(room, person), actor="cli")
    except (ValueError, LookupError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not count:
        raise click.ClickException(f"no live feed link of {room or person}")
    click.echo(f"revoked {count} feed link(s)")

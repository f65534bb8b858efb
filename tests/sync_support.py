"""Helpers shared by the sync, job and webhook tests: a room on both sides, and reading it back."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from roombridge import db, notifications
from roombridge.channels import create_channel
from roombridge.db import utcnow
from roombridge.gcal import CalendarGateway
from roombridge.models import Reservation, ReservationStatus, Room, WatchChannel
from roombridge.notifications import take_push
from roombridge.queue import redis
from tests.factories import make_room
from tests.support import SERVICE_ACCOUNT

ROOM = "atlas@resource.calendar.google.com"


def soon(days: int = 3, hour: int = 10) -> datetime:
    """A whole hour a few days ahead, inside the sync window."""
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=days)
    return base.replace(hour=hour)


def rfc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_room(emulator, app, calendar_id: str = ROOM, name: str = "Atlas", time_zone: str = "Europe/London") -> int:
    """The room calendar in the emulator, shared with the service account, and in scope in the app."""
    emulator.state.add_calendar(calendar_id, name, kind="room", time_zone=time_zone)
    emulator.state.share(calendar_id, SERVICE_ACCOUNT, "writer")
    with app.app_context():
        room = make_room(db.session(), calendar_id=calendar_id, name=name, time_zone=time_zone)
        db.session().commit()
        return room.id


def watched_room(emulator, app, live_server_factory) -> tuple[int, WatchChannel]:
    """add_room, the app served on a real port, and a live push channel to it: pushes arrive for real."""
    room_id = add_room(emulator, app)
    server = live_server_factory(app)
    config = dataclasses.replace(app.config["ROOMBRIDGE"], WEBHOOK_BASE_URL=server.url)
    with app.app_context():
        session = db.session()
        gateway = CalendarGateway.for_app(kind="renewal")
        channel = create_channel(session, gateway, session.get(Room, room_id), config, utcnow())
    return room_id, channel


def reservations(app, room_id: int, *, live_only: bool = False) -> list[Reservation]:
    with app.app_context():
        query = sa.select(Reservation).where(Reservation.room_id == room_id).order_by(Reservation.start_at)
        found = list(db.session().scalars(query))
    if live_only:
        found = [r for r in found if r.status in (ReservationStatus.CONFIRMED, ReservationStatus.CONFLICT,
                                                  ReservationStatus.PENDING)]
    return found


def list_calls(emulator, calendar_id: str = ROOM) -> list[dict]:
    """Every events.list page request on the calendar."""
    return [r for r in emulator.state.requests(calendar=calendar_id, method="GET")
            if r["path"].rstrip("/").endswith("/events")]


def sync_runs(emulator, calendar_id: str = ROOM) -> int:
    """How many listings (syncs) began: first pages only, as the emulator's request log has them."""
    return sum(1 for r in list_calls(emulator, calendar_id) if "pageToken" not in r["query"])



def take_pushes(channel: WatchChannel, moments) -> None:
    """Google's change pushes on `channel` at these moments, through the webhook's own Redis path.

    Call in an app context; the channel's row need not be committed (its Redis entry is written here).
    """
    conn = redis()
    notifications.cache_channel(conn, channel)
    for moment in moments:
        taken = take_push(conn, channel.id, channel.token, channel.resource_id or "", None, moment)
        assert taken.verdict == "accepted", taken


def pushes_counted(app, channel_id: str) -> int:
    """Every push counted on the channel: on its row, and in Redis since the room's last sync."""
    with app.app_context():
        row = db.session().get(WatchChannel, channel_id)
        return row.push_count + notifications.pending_pushes(redis(), [channel_id])[channel_id].count

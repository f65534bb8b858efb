"""The data model: rooms, reservations, watch channels, sync state, API tokens, audit log, Google calls.

Instants are aware UTC datetimes (`UTCDateTime`); a room's time zone is only for showing
and for policies such as bookable hours.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from roombridge.db import Base, UTCDateTime, utcnow

log = logging.getLogger(__name__)


class ReservationStatus(enum.StrEnum):
    PENDING = "pending"  # stored here, not yet written to Google
    CONFIRMED = "confirmed"  # on the room's Google calendar
    FAILED = "failed"  # Google refused it permanently; kept, with the reason
    CANCELLED = "cancelled"
    CONFLICT = "conflict"  # made in Google over a live reservation: kept for admins, holds nothing
    RELEASED = "released"  # nobody checked in by the deadline: the room is free again (see release_reason)


# Statuses that hold the room: the no-overlap rule applies among these only.
LIVE_STATUSES = (ReservationStatus.PENDING, ReservationStatus.CONFIRMED, ReservationStatus.FAILED)


class ReservationSource(enum.StrEnum):
    WEB = "web"
    API = "api"
    GOOGLE = "google"
    DISPLAY = "display"  # a walk-up booking on the room's door display


class CheckinDeadlineAction(enum.StrEnum):
    """What happens to a reservation nobody checked in to by the end of its check-in window."""

    RELEASE = "release"  # the reservation is released and the room freed
    FLAG = "flag"  # only recorded as a no-show (`Reservation.missed_checkin_at`)


class ReleaseReason(enum.StrEnum):
    """Why a reservation was released (`Reservation.release_reason`)."""

    NO_SHOW = "no_show"  # nobody checked in by the deadline
    # A later instance of a series made in Google that was released too often: the room declines it.
    SERIES_ENDED = "series_ended"


class RoomHealth(enum.StrEnum):
    """Why a room is unhealthy (`Room.health`); `Room.health_error` keeps Google's words for admins."""

    CHANNEL_REFUSED = "channel_refused"  # Google refused a push channel on its calendar
    NO_ACCESS = "no_access"  # the access check found the service account cannot make changes


class SkipReason(enum.StrEnum):
    """Why a sync skipped a Google event (`SkippedEvent.reason`)."""

    UNREADABLE = "unreadable"  # the event could not be read as a booking (its times, its fields)
    NOT_APPLIED = "not_applied"  # read, but writing it to its reservation failed (the database refused it)


def _enum(enum_cls: type[enum.Enum], name: str, *, check: bool = True) -> sa.Enum:
    # Stored as plain strings with a CHECK, so adding a value is an ordinary migration. A column
    # added later has no CHECK (SQLite cannot add one without copying the table and its triggers).
    return sa.Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=check,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Room(TimestampMixin, Base):
    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(primary_key=True)
    calendar_id: Mapped[str] = mapped_column(sa.String(254), unique=True)  # resource calendar email
    name: Mapped[str] = mapped_column(sa.String(200))
    capacity: Mapped[int | None]
    building: Mapped[str | None] = mapped_column(sa.String(200))
    floor: Mapped[str | None] = mapped_column(sa.String(50))
    features: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    time_zone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    in_scope: Mapped[bool] = mapped_column(default=True, index=True)
    # Per-room booking policy; None means the global default from Config.
    bookable_hours: Mapped[str | None] = mapped_column(sa.String(11))  # "HH:MM-HH:MM"
    max_duration_minutes: Mapped[int | None]
    max_days_ahead: Mapped[int | None]
    min_notice_minutes: Mapped[int | None]
    # Per-room check-in policy; None means the global default from Config (CHECKIN_*). The window
    # opens `checkin_opens_minutes` before the start and closes `checkin_grace_minutes` after it.
    checkin_required: Mapped[bool | None]
    checkin_opens_minutes: Mapped[int | None]
    checkin_grace_minutes: Mapped[int | None]
    checkin_deadline_action: Mapped[CheckinDeadlineAction | None] = mapped_column(
        _enum(CheckinDeadlineAction, "checkin_deadline_action", check=False)
    )
    # Integration health, as last seen: the access role Google granted, and why it is unhealthy.
    access_role: Mapped[str | None] = mapped_column(sa.String(32))
    health: Mapped[RoomHealth | None] = mapped_column(_enum(RoomHealth, "room_health", check=False))
    health_error: Mapped[str | None] = mapped_column(sa.Text)

    reservations: Mapped[list[Reservation]] = relationship(back_populates="room")
    channels: Mapped[list[WatchChannel]] = relationship(back_populates="room")
    sync_state: Mapped[RoomSyncState | None] = relationship(back_populates="room")

    def __repr__(self) -> str:
        return f"<Room {self.id} {self.calendar_id}>"

    @property
    def zone(self) -> ZoneInfo:
        """The room's time zone; UTC (logged) if its name is unknown here."""
        try:
            return ZoneInfo(self.time_zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError, OSError):
            log.warning("room %s has an unknown time zone %r; using UTC", self.id, self.time_zone)
            return ZoneInfo("UTC")


class Reservation(TimestampMixin, Base):
    __tablename__ = "reservations"
    __table_args__ = (
        sa.CheckConstraint("start_at < end_at", name="ck_reservations_start_before_end"),
        sa.Index("ix_reservations_room_start", "room_id", "start_at"),
        sa.Index("ix_reservations_room_event", "room_id", "google_event_id", unique=True),
        sa.Index("ix_reservations_organiser_end", "organiser_email", "end_at"),  # the live-reservations cap
        sa.Index("ix_reservations_start", "start_at"),  # the check-in deadline scan, across rooms
        sa.Index("ix_reservations_updated", "updated_at"),  # the Insights rollup finds the days changed since
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id"))
    organiser_email: Mapped[str] = mapped_column(sa.String(254))
    title: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    all_day: Mapped[bool] = mapped_column(default=False)
    attendees: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    # Private or confidential in Google: room displays and room feeds show "Busy", not the title.
    private: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    status: Mapped[ReservationStatus] = mapped_column(
        _enum(ReservationStatus, "reservation_status"), default=ReservationStatus.PENDING
    )
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    # Cancelled here, and Google refused to delete its event for good: no periodic retry.
    google_delete_failed: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    source: Mapped[ReservationSource] = mapped_column(_enum(ReservationSource, "reservation_source"))
    # Recurring bookings made here share a series id (a `ReservationSeries` row since series became one
    # recurring event; older series have none and stay separate events); instances from Google carry
    # the series' event id.
    series_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    # A series occurrence's start in the series' rule (UTC), however the occurrence was moved since:
    # Google's instance id (`<eventId>_<YYYYMMDDTHHMMSSZ>`) and the iMIP RECURRENCE-ID are made of it.
    occurrence_start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Its instance was patched in Google (an exception): later changes patch it again, never only record it.
    instance_exception: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # The Google side. The event id is deterministic for our own reservations (see gcal);
    # the revision grows when an event must be re-created, since Google never reuses a deleted id.
    google_event_id: Mapped[str | None] = mapped_column(sa.String(1024))
    google_revision: Mapped[int] = mapped_column(default=0)
    # The room calendar that holds our event now (None: nothing written, or deleted). It differs
    # from the room's calendar after a move to another room, until the push job has moved it.
    google_calendar_id: Mapped[str | None] = mapped_column(sa.String(254))
    google_etag: Mapped[str | None] = mapped_column(sa.String(128))
    google_recurring_event_id: Mapped[str | None] = mapped_column(sa.String(1024))
    google_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    room_response: Mapped[str | None] = mapped_column(sa.String(16))  # accepted, declined, ...
    # The people must be told with the next write to Google: set when the booking is made and when
    # its time, room or attendees change (not its title or description); cleared once written.
    # Delegated mode writes with sendUpdates=all then; room mode's mail job compares with what
    # people were sent (`SentInvitation`) instead.
    invitation_due: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    conflict_with_id: Mapped[int | None] = mapped_column(sa.ForeignKey("reservations.id"))
    # Check-in: who (an e-mail, or "display") and when. A no-show keeps `missed_checkin_at` (the
    # deadline passed without a check-in) whether the room's action released it or only flagged it.
    checked_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checked_in_by: Mapped[str | None] = mapped_column(sa.String(254))
    missed_checkin_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    release_reason: Mapped[ReleaseReason | None] = mapped_column(
        _enum(ReleaseReason, "release_reason", check=False)
    )
    # Ended early: `end_at` moved to the moment it ended; the end it was booked with is kept here.
    ended_early_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    original_end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(default=1)

    room: Mapped[Room] = relationship(back_populates="reservations")

    __mapper_args__ = {"version_id_col": version}

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    def __repr__(self) -> str:
        return f"<Reservation {self.id} room={self.room_id} {self.start_at:%Y-%m-%d %H:%M}Z {self.status}>"


class SentInvitation(Base):
    """Room mode: what people's calendars were last sent for one UID of a reservation (roombridge/invitations.py).

    A CANCEL must name the event as people have it (its organiser, location, time, UID) with a
    higher SEQUENCE, go to those who were invited, and go only where a REQUEST went: the
    reservation as it stands now may be in another room, at another time, with other people.
    One row per UID, written after the mail was handed to SMTP.
    """

    __tablename__ = "sent_invitations"

    uid: Mapped[str] = mapped_column(sa.String(1100), primary_key=True)
    # One occurrence of a recurring event is filed apart from its series: its RECURRENCE-ID in UTC
    # (YYYYMMDDTHHMMSSZ, as Google's instance ids end), or "" for a whole event or series.
    recurrence_id: Mapped[str] = mapped_column(sa.String(16), primary_key=True, default="")
    reservation_id: Mapped[int] = mapped_column(sa.ForeignKey("reservations.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(sa.String(16))  # the last one sent: REQUEST or CANCEL
    sequence: Mapped[int] = mapped_column()
    organiser: Mapped[str] = mapped_column(sa.String(254))  # the room calendar's address
    organiser_name: Mapped[str] = mapped_column(sa.Text)
    location: Mapped[str] = mapped_column(sa.Text)
    summary: Mapped[str] = mapped_column(sa.Text)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    time_zone: Mapped[str] = mapped_column(sa.String(64))
    booker: Mapped[str] = mapped_column(sa.String(254))
    attendees: Mapped[list[str]] = mapped_column(sa.JSON, default=list)  # everyone invited, the booker first
    rrule: Mapped[str | None] = mapped_column(sa.String(500))  # a series: its rule, and the dates it leaves out
    exdates: Mapped[list[str]] = mapped_column(sa.JSON, default=list)  # UTC instants, ISO 8601
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReservationSeries(TimestampMixin, Base):
    """A series booked here: ONE recurring event on the room's Google calendar (roombridge/publish.py).

    Its occurrences are reservations sharing its id as `series_id`; each maps to one instance of the
    event. The fields here are the event's own (the "all occurrences" values): an occurrence that
    differs from them is an exception of its instance. `rule` is the RRULE line, `start_at`/`end_at`
    the first occurrence of the rule, `exdates` the occurrences left out (clashes at booking time).
    """

    __tablename__ = "reservation_series"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id"), index=True)
    organiser_email: Mapped[str] = mapped_column(sa.String(254))
    title: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    attendees: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rule: Mapped[str] = mapped_column(sa.String(500))
    exdates: Mapped[list[str]] = mapped_column(sa.JSON, default=list)  # UTC instants, ISO 8601
    google_event_id: Mapped[str | None] = mapped_column(sa.String(1024))
    google_revision: Mapped[int] = mapped_column(default=0)
    google_calendar_id: Mapped[str | None] = mapped_column(sa.String(254))
    google_etag: Mapped[str | None] = mapped_column(sa.String(128))
    google_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The recurring event must be written (inserted, patched, moved or deleted) by the next publish
    # of any occurrence; and the people told of the whole series (room mode: one invitation).
    write_due: Mapped[bool] = mapped_column(default=True)
    invitation_due: Mapped[bool] = mapped_column(default=True)
    version: Mapped[int] = mapped_column(default=1)

    room: Mapped[Room] = relationship()

    __mapper_args__ = {"version_id_col": version}

    @property
    def duration(self):
        return self.end_at - self.start_at

    def holds(self, reservation: Reservation) -> bool:
        """Whether the reservation is an instance of this series' event: one of its occurrences, in its room
        (an occurrence moved alone to another room is an event of its own there: an instance cannot leave
        its calendar)."""
        return (reservation.series_id == self.id and reservation.occurrence_start_at is not None
                and reservation.room_id == self.room_id)

    def keeps(self, reservation: Reservation) -> bool:
        """Whether the recurring event still has the occurrence as an instance: held, and not cancelled or released."""
        return self.holds(reservation) and reservation.status not in (ReservationStatus.CANCELLED,
                                                                      ReservationStatus.RELEASED)

    def left_out(self, occurrences: Iterable[Reservation]) -> list[datetime]:
        """The starts the recurring event's rule leaves out (its EXDATEs), soonest first: the clashes skipped
        at booking time, and every occurrence cancelled, released or moved alone to another room (an event
        of its own there). One set for Google's event and for the invitation people hold, so that neither
        brings back an instance when the event is written anew (the rule's times moved, another room)."""
        gone = {r.occurrence_start_at for r in occurrences if r.occurrence_start_at is not None and not self.keeps(r)}
        return sorted({*(datetime.fromisoformat(text) for text in self.exdates or []), *gone})


class WatchChannel(Base):
    """One events.watch push channel on a room calendar."""

    __tablename__ = "watch_channels"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # our channel id
    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id"), index=True)
    resource_id: Mapped[str | None] = mapped_column(sa.String(256))
    token: Mapped[str] = mapped_column(sa.String(256))
    address: Mapped[str] = mapped_column(sa.String(1024))
    expiration: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Google's channels.stop can fail; the stop is retried and never blocks the new channel.
    stop_pending: Mapped[bool] = mapped_column(default=False)
    stop_error: Mapped[str | None] = mapped_column(sa.Text)
    sync_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_push_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_message_number: Mapped[int | None] = mapped_column(sa.BigInteger)
    push_count: Mapped[int] = mapped_column(default=0)

    room: Mapped[Room] = relationship(back_populates="channels")

    def is_live(self, now: datetime) -> bool:
        return self.stopped_at is None and (self.expiration is None or self.expiration > now)


class RoomSyncState(Base):
    __tablename__ = "room_sync_states"

    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id"), primary_key=True)
    sync_token: Mapped[str | None] = mapped_column(sa.Text)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_full_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sync_count: Mapped[int] = mapped_column(default=0)

    room: Mapped[Room] = relationship(back_populates="sync_state")


class SkippedEvent(Base):
    """A Google event a room's sync could not apply: skipped so the rest and the sync token advance.

    One row per (room, event id), kept for admins (the console's room health) until the event is
    applied by a later sync or deleted in Google.
    """

    __tablename__ = "skipped_events"
    __table_args__ = (sa.UniqueConstraint("room_id", "event_id", name="uq_skipped_events_room_event"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id"))
    event_id: Mapped[str] = mapped_column(sa.String(1024))  # as stored: without NUL or lone surrogates
    reason: Mapped[SkipReason] = mapped_column(_enum(SkipReason, "skip_reason"))
    error: Mapped[str] = mapped_column(sa.Text)  # the exception, for admins and the log
    first_skipped_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_skipped_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    times: Mapped[int] = mapped_column(default=1)  # syncs that skipped it


class ApiToken(Base):
    """A bearer token for the JSON API. Only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_email: Mapped[str] = mapped_column(sa.String(254), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(12))  # shown to the owner to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: until revoked

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class SecretLink:
    """A screen's secret link: only the token's SHA-256 is stored; revocable; last seen noted coarsely."""

    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(12))  # shown to admins to tell links apart
    created_by: Mapped[str] = mapped_column(sa.String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RoomDisplay(SecretLink, Base):
    """A room's door display link: a secret token (only its SHA-256 stored) that opens one room's page."""

    __tablename__ = "room_displays"

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id"), index=True)

    room: Mapped[Room] = relationship()


class LobbyDisplay(SecretLink, Base):
    """A lobby screen's link: a secret token (only its SHA-256 stored) that opens one building's overview."""

    __tablename__ = "lobby_displays"

    id: Mapped[int] = mapped_column(primary_key=True)
    building: Mapped[str] = mapped_column(sa.String(200), index=True)


class CalendarFeed(Base):
    """An ICS subscription link, of one room or of one person: a secret token, only its SHA-256 stored."""

    __tablename__ = "calendar_feeds"
    __table_args__ = (
        sa.CheckConstraint("(room_id IS NULL) <> (person_email IS NULL)", name="ck_calendar_feeds_one_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int | None] = mapped_column(sa.ForeignKey("rooms.id"), index=True)
    person_email: Mapped[str | None] = mapped_column(sa.String(254), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(12))  # shown to tell links apart
    created_by: Mapped[str] = mapped_column(sa.String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    room: Mapped[Room | None] = relationship()


class UsageFigures:
    """The insight figures a rollup row sums (roombridge/insights.py ROLLUP_COLUMNS)."""

    bookings: Mapped[int]
    booked_seconds: Mapped[float] = mapped_column(sa.Float)
    checked_in_seconds: Mapped[float] = mapped_column(sa.Float)
    released_seconds: Mapped[float] = mapped_column(sa.Float)
    ended_early_seconds: Mapped[float] = mapped_column(sa.Float)
    checked_in: Mapped[int]
    no_shows: Mapped[int]
    people: Mapped[int]
    source_web: Mapped[int]
    source_api: Mapped[int]
    source_google: Mapped[int]
    source_display: Mapped[int]


class HeldByHour:
    """Seconds held in one weekday x hour of room-local time, per building and floor (the heatmap's rollup)."""

    building: Mapped[str | None] = mapped_column(sa.String(200))
    floor: Mapped[str | None] = mapped_column(sa.String(50))
    weekday: Mapped[int] = mapped_column(sa.SmallInteger)  # 0 = Monday
    hour: Mapped[int] = mapped_column(sa.SmallInteger)
    held_seconds: Mapped[float] = mapped_column(sa.Float)


class RoomUsageMonth(UsageFigures, Base):
    """Insight figures of one room over one whole UTC month, summed by the rollup job (roombridge/insights.py)."""

    __tablename__ = "room_usage_months"

    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id"), primary_key=True)
    month: Mapped[date] = mapped_column(sa.Date, primary_key=True, index=True)  # its first day


class UsageHourMonth(HeldByHour, Base):
    """Seconds held by bookings in one weekday x hour (room-local) over one UTC month, per building and floor."""

    __tablename__ = "usage_hour_months"

    id: Mapped[int] = mapped_column(primary_key=True)
    month: Mapped[date] = mapped_column(sa.Date, index=True)


class UsageRollup(Base):
    """A month the rollup has summed (its rows above are complete), and when."""

    __tablename__ = "usage_rollups"

    month: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RoomUsageDay(UsageFigures, Base):
    """Insight figures of one room over one UTC day (by start), summed by the rollup job (roombridge/insights.py)."""

    __tablename__ = "room_usage_days"

    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id"), primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True, index=True)


class RoomUsageToDate(UsageFigures, Base):
    """A room's figures from the first of a UTC month through `day` (running sums), for every day from
    its first booked day of the month on: any range inside a month is then two rows (end minus the day
    before the start). Summed by the rollup job from the day rows (roombridge/insights.py)."""

    __tablename__ = "room_usage_to_date"

    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id"), primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True, index=True)


class UsageToDateMonth(Base):
    """A month whose running sums are complete through `through` (all its day rows summed by then)."""

    __tablename__ = "usage_to_date_months"

    month: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    through: Mapped[date] = mapped_column(sa.Date)
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageHourDay(HeldByHour, Base):
    """Seconds held by bookings starting on one UTC day, by weekday x hour (room-local), per building and floor."""

    __tablename__ = "usage_hour_days"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, index=True)


class UsageRollupDay(Base):
    """A day the rollup has summed (its rows above are complete), and when."""

    __tablename__ = "usage_rollup_days"

    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Person(Base):
    """Someone who signed in here: the attendee autocomplete's own directory (never Google's)."""

    __tablename__ = "people"

    email: Mapped[str] = mapped_column(sa.String(254), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    last_signed_in_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FavouriteRoom(Base):
    """A room a person marked as a favourite; the finder lists favourites first."""

    __tablename__ = "favourite_rooms"

    user_email: Mapped[str] = mapped_column(sa.String(254), primary_key=True)
    room_id: Mapped[int] = mapped_column(sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GoogleCall(Base):
    """One Calendar API call the gateway made, or refused before making it (roombridge/call_log.py).

    Written in batches from a Redis buffer, never on a call's own path. `room_id` is the room
    whose calendar it was; `calendar_id` is kept only for a calendar that is no room of ours (a
    refused one), so the 860,000 rows a day of 10,000 rooms do not each carry an address.
    No foreign key: the log must never slow or block what happens to rooms.
    """

    __tablename__ = "google_calls"
    __table_args__ = (
        sa.Index("ix_google_calls_room_at", "room_id", "at"),  # the recent calls of one room
        sa.Index("ix_google_calls_at", "at"),  # the summary's window, and retention
        sa.Index("ix_google_calls_outcome_at", "outcome", "at"),  # refusals in a window: zero expected
    )

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the call began
    room_id: Mapped[int | None]
    calendar_id: Mapped[str | None] = mapped_column(sa.String(254))
    operation: Mapped[str] = mapped_column(sa.String(32))  # events.insert, events.list, channels.stop, ...
    kind: Mapped[str] = mapped_column(sa.String(16))  # write, sync, sweep, renewal (roombridge/call_budget.py)
    outcome: Mapped[str] = mapped_column(sa.String(24))  # ok, not_found, rate_limited, refused_by_allowlist, ...
    status: Mapped[int | None] = mapped_column(sa.SmallInteger)  # Google's HTTP status; None: no answer
    duration_ms: Mapped[int] = mapped_column(default=0)


class AuditEntry(Base):
    """Who changed what, and when: every change to a reservation, room or channel."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(254))  # an e-mail, "google" or "system"
    action: Mapped[str] = mapped_column(sa.String(64))
    entity: Mapped[str] = mapped_column(sa.String(32))
    entity_id: Mapped[str] = mapped_column(sa.String(64))
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)


def audit(session, actor: str, action: str, entity: object, **details: Any) -> AuditEntry:
    """Record a change in the session's transaction, so the log and the change commit together."""
    entry = AuditEntry(
        actor=actor,
        action=action,
        entity=type(entity).__name__.lower(),
        entity_id=str(getattr(entity, "id", entity)),
        details=details,
    )
    session.add(entry)
    return entry

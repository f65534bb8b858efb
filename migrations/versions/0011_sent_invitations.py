"""sent invitations: what people's calendars were last sent per UID (room mode), so a CANCEL names the old event

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-02 10:00:00

Reservations already invited before this revision get a row as they stand now (their last
REQUEST carried SEQUENCE = the row version, at most the current one), so cancelling them
later still tells people.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import roombridge.db

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = roombridge.db.UTCDateTime(timezone=True)
    sent = op.create_table(
        "sent_invitations",
        sa.Column("uid", sa.String(1100), primary_key=True),
        sa.Column("recurrence_id", sa.String(16), primary_key=True, server_default=""),
        sa.Column("reservation_id", sa.Integer(), sa.ForeignKey("reservations.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("organiser", sa.String(254), nullable=False),
        sa.Column("organiser_name", sa.Text(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("start_at", when, nullable=False),
        sa.Column("end_at", when, nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("booker", sa.String(254), nullable=False),
        sa.Column("attendees", sa.JSON(), nullable=False),
        sa.Column("rrule", sa.String(500), nullable=True),
        sa.Column("exdates", sa.JSON(), nullable=False),
        sa.Column("sent_at", when, nullable=False),
    )
    op.create_index("ix_sent_invitations_reservation_id", "sent_invitations", ["reservation_id"])

    reservations = sa.table(
        "reservations", *(sa.column(name) for name in (
            "id", "room_id", "organiser_email", "title", "status", "source", "google_event_id",
            "google_calendar_id", "version")),
        sa.column("start_at", when), sa.column("end_at", when), sa.column("attendees", sa.JSON()))
    rooms = sa.table("rooms", sa.column("id"), sa.column("calendar_id"), sa.column("name"), sa.column("time_zone"))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(reservations, rooms.c.calendar_id, rooms.c.name, rooms.c.time_zone)
        .join(rooms, rooms.c.id == reservations.c.room_id)
        .where(reservations.c.source != "google", reservations.c.status.in_(["confirmed", "pending"]),
               reservations.c.google_event_id.is_not(None), reservations.c.google_calendar_id.is_not(None))
    ).mappings()
    now = datetime.now(UTC)
    for row in rows:
        people = [row["organiser_email"]] + [a for a in row["attendees"] or [] if a != row["organiser_email"]]
        values = {
            "uid": f"{row['google_event_id']}@google.com", "reservation_id": row["id"], "method": "REQUEST",
            "sequence": row["version"], "organiser": row["calendar_id"], "organiser_name": row["name"],
            "location": row["name"], "summary": row["title"], "start_at": row["start_at"], "end_at": row["end_at"],
            "time_zone": row["time_zone"], "booker": row["organiser_email"], "attendees": people,
            "recurrence_id": "", "exdates": [],
        }
        bind.execute(sa.insert(sent).values(**values, sent_at=now))


def downgrade() -> None:
    op.drop_index("ix_sent_invitations_reservation_id", "sent_invitations")
    op.drop_table("sent_invitations")

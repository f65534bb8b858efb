"""series as one recurring event: reservation_series; reservations.occurrence_start_at, instance_exception

Revision ID: 0010
Revises: 0013
Create Date: 2026-12-02 09:45:00
"""

import sqlalchemy as sa
from alembic import op

import roombridge.db

revision = "0010"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = roombridge.db.UTCDateTime(timezone=True)
    op.create_table(
        "reservation_series",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("organiser_email", sa.String(254), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("attendees", sa.JSON(), nullable=False),
        sa.Column("start_at", when, nullable=False),
        sa.Column("end_at", when, nullable=False),
        sa.Column("rule", sa.String(500), nullable=False),
        sa.Column("exdates", sa.JSON(), nullable=False),
        sa.Column("google_event_id", sa.String(1024), nullable=True),
        sa.Column("google_revision", sa.Integer(), nullable=False),
        sa.Column("google_calendar_id", sa.String(254), nullable=True),
        sa.Column("google_etag", sa.String(128), nullable=True),
        sa.Column("google_updated_at", when, nullable=True),
        sa.Column("write_due", sa.Boolean(), nullable=False),
        sa.Column("invitation_due", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reservation_series_room_id", "reservation_series", ["room_id"])
    # Plain ADD COLUMN (no batch copy): on SQLite a table copy would drop the no-overlap triggers.
    op.add_column("reservations", sa.Column("occurrence_start_at", when, nullable=True))
    op.add_column("reservations", sa.Column("instance_exception", sa.Boolean(), server_default=sa.false(),
                                            nullable=False))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place (no table copy, the triggers stay).
    op.drop_column("reservations", "instance_exception")
    op.drop_column("reservations", "occurrence_start_at")
    op.drop_index("ix_reservation_series_room_id", table_name="reservation_series")
    op.drop_table("reservation_series")

"""feeds and insights: calendar_feeds (ICS links of a room or a person); the monthly insight rollup

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-02 07:00:00
"""

import sqlalchemy as sa
from alembic import op

import roombridge.db

revision = "0007"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = roombridge.db.UTCDateTime(timezone=True)
    op.create_table(
        "calendar_feeds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=True),
        sa.Column("person_email", sa.String(254), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(12), nullable=False),
        sa.Column("created_by", sa.String(254), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("revoked_at", when, nullable=True),
        sa.CheckConstraint("(room_id IS NULL) <> (person_email IS NULL)", name="ck_calendar_feeds_one_subject"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_calendar_feeds_room_id", "calendar_feeds", ["room_id"])
    op.create_index("ix_calendar_feeds_person_email", "calendar_feeds", ["person_email"])

    seconds = [sa.Column(f"{name}_seconds", sa.Float(), nullable=False)
               for name in ("booked", "checked_in", "released", "ended_early")]
    counts = [sa.Column(name, sa.Integer(), nullable=False)
              for name in ("checked_in", "no_shows", "people", "source_web", "source_api", "source_google",
                           "source_display")]
    op.create_table(
        "room_usage_months",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("bookings", sa.Integer(), nullable=False),
        *seconds,
        *counts,
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"]),
        sa.PrimaryKeyConstraint("room_id", "month"),
    )
    op.create_index("ix_room_usage_months_month", "room_usage_months", ["month"])
    op.create_table(
        "usage_hour_months",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("building", sa.String(200), nullable=True),
        sa.Column("floor", sa.String(50), nullable=True),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("held_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_usage_hour_months_month", "usage_hour_months", ["month"])
    op.create_table(
        "usage_rollups",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("refreshed_at", when, nullable=False),
        sa.PrimaryKeyConstraint("month"),
    )


def downgrade() -> None:
    op.drop_table("usage_rollups")
    op.drop_index("ix_usage_hour_months_month", "usage_hour_months")
    op.drop_table("usage_hour_months")
    op.drop_index("ix_room_usage_months_month", "room_usage_months")
    op.drop_table("room_usage_months")
    op.drop_index("ix_calendar_feeds_person_email", "calendar_feeds")
    op.drop_index("ix_calendar_feeds_room_id", "calendar_feeds")
    op.drop_table("calendar_feeds")

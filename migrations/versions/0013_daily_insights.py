"""daily insights rollup (room_usage_days, usage_hour_days, usage_rollup_days; the running sums
room_usage_to_date, usage_to_date_months; reservations by updated_at);
lobby_displays, a building's secret lobby-screen links

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 10:00:00
"""

import sqlalchemy as sa
from alembic import op

import roombridge.db

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = roombridge.db.UTCDateTime(timezone=True)

    def figures() -> list[sa.Column]:
        """The figure columns of a rollup row (fresh Column objects for each table)."""
        return [sa.Column("bookings", sa.Integer(), nullable=False),
                *(sa.Column(f"{name}_seconds", sa.Float(), nullable=False)
                  for name in ("booked", "checked_in", "released", "ended_early")),
                *(sa.Column(name, sa.Integer(), nullable=False)
                  for name in ("checked_in", "no_shows", "people", "source_web", "source_api", "source_google",
                               "source_display"))]

    op.create_table(
        "room_usage_days",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *figures(),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"]),
        sa.PrimaryKeyConstraint("room_id", "day"),
    )
    op.create_index("ix_room_usage_days_day", "room_usage_days", ["day"])
    op.create_table(
        "usage_hour_days",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("building", sa.String(200), nullable=True),
        sa.Column("floor", sa.String(50), nullable=True),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("held_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_usage_hour_days_day", "usage_hour_days", ["day"])
    op.create_table(
        "usage_rollup_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("refreshed_at", when, nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )
    op.create_table(
        "room_usage_to_date",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *figures(),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"]),
        sa.PrimaryKeyConstraint("room_id", "day"),
    )
    op.create_index("ix_room_usage_to_date_day", "room_usage_to_date", ["day"])
    op.create_table(
        "usage_to_date_months",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("through", sa.Date(), nullable=False),
        sa.Column("refreshed_at", when, nullable=False),
        sa.PrimaryKeyConstraint("month"),
    )
    op.create_index("ix_reservations_updated", "reservations", ["updated_at"])
    op.create_table(
        "lobby_displays",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("building", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(12), nullable=False),
        sa.Column("created_by", sa.String(254), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("last_seen_at", when, nullable=True),
        sa.Column("revoked_at", when, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_lobby_displays_building", "lobby_displays", ["building"])


def downgrade() -> None:
    op.drop_index("ix_lobby_displays_building", "lobby_displays")
    op.drop_table("lobby_displays")
    op.drop_index("ix_reservations_updated", "reservations")
    op.drop_table("usage_to_date_months")
    op.drop_index("ix_room_usage_to_date_day", "room_usage_to_date")
    op.drop_table("room_usage_to_date")
    op.drop_table("usage_rollup_days")
    op.drop_index("ix_usage_hour_days_day", "usage_hour_days")
    op.drop_table("usage_hour_days")
    op.drop_index("ix_room_usage_days_day", "room_usage_days")
    op.drop_table("room_usage_days")

"""skipped events: Google events a room's sync could not apply, kept for admins

Revision ID: 0003
Revises: 0009
Create Date: 2026-12-02 07:00:00
"""

import sqlalchemy as sa
from alembic import op

import roombridge.db

revision = "0003"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "skipped_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("room_id", sa.Integer(), sa.ForeignKey("rooms.id"), nullable=False),
        sa.Column("event_id", sa.String(1024), nullable=False),
        sa.Column("reason", sa.Enum("unreadable", "not_applied", name="skip_reason", native_enum=False,
                                    create_constraint=True, length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("first_skipped_at", roombridge.db.UTCDateTime(), nullable=False),
        sa.Column("last_skipped_at", roombridge.db.UTCDateTime(), nullable=False),
        sa.Column("times", sa.Integer(), nullable=False),
        sa.UniqueConstraint("room_id", "event_id", name="uq_skipped_events_room_event"),
    )


def downgrade() -> None:
    op.drop_table("skipped_events")

"""feeds and insights: calendar_feeds (ICS subscription links of a room or a person)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 07:00:00
"""

import sqlalchemy as sa
from alembic import op

import roombridge.db

revision = "0007"
down_revision = "0006"
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


def downgrade() -> None:
    op.drop_index("ix_calendar_feeds_person_email", "calendar_feeds")
    op.drop_index("ix_calendar_feeds_room_id", "calendar_feeds")
    op.drop_table("calendar_feeds")

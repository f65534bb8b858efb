"""google calls: the log of every Calendar API call per room, kept GOOGLE_CALL_LOG_RETENTION_DAYS

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 09:45:00
"""

import sqlalchemy as sa
from alembic import op

import roombridge.db

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "google_calls",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", roombridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=True),
        sa.Column("calendar_id", sa.String(254), nullable=True),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_google_calls_room_at", "google_calls", ["room_id", "at"])
    op.create_index("ix_google_calls_at", "google_calls", ["at"])
    op.create_index("ix_google_calls_outcome_at", "google_calls", ["outcome", "at"])


def downgrade() -> None:
    op.drop_index("ix_google_calls_outcome_at", "google_calls")
    op.drop_index("ix_google_calls_at", "google_calls")
    op.drop_index("ix_google_calls_room_at", "google_calls")
    op.drop_table("google_calls")

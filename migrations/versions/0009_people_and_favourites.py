"""people and favourite rooms: who signed in (the attendee autocomplete), each person's favourite rooms

Revision ID: 0009
Revises: 0004
Create Date: 2026-12-02 07:10:00
"""

import sqlalchemy as sa
from alembic import op

import roombridge.db

revision = "0009"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("email", sa.String(254), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("last_signed_in_at", roombridge.db.UTCDateTime(), nullable=False),
    )
    op.create_table(
        "favourite_rooms",
        sa.Column("user_email", sa.String(254), primary_key=True),
        sa.Column("room_id", sa.Integer(), sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("created_at", roombridge.db.UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("favourite_rooms")
    op.drop_table("people")

"""typed states: a room's health as an enum, a failed Google delete as a flag

Until now both were free text matched with startswith/LIKE (`health_error` prefixes,
"Google delete failed" inside `status_reason`). The texts stay for people to read; the
code decides on the new columns. Existing rows are classified from their text once, here.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 06:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# No CHECK: SQLite can add one only by copying the table, which would drop its triggers.
ROOM_HEALTH = sa.Enum("channel_refused", "no_access", name="room_health", native_enum=False,
                      create_constraint=False, length=16)


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): on SQLite a table copy would drop the no-overlap triggers.
    op.add_column("rooms", sa.Column("health", ROOM_HEALTH, nullable=True))
    op.add_column("reservations", sa.Column("google_delete_failed", sa.Boolean(), server_default=sa.false(),
                                            nullable=False))
    op.execute("UPDATE rooms SET health = 'channel_refused' WHERE health_error LIKE 'Google refused a push channel%'")
    op.execute("UPDATE rooms SET health = 'no_access' WHERE health_error LIKE 'Access check: %'")
    op.execute("UPDATE reservations SET google_delete_failed = true WHERE status_reason LIKE '%Google delete failed%'")


def downgrade() -> None:
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("google_delete_failed")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("health")

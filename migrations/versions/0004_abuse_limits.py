"""limits on abuse: invitations only when people must be told; API tokens that expire

`reservations.invitation_due`: the next write to Google tells the people (set when a booking
is made or its time, room or attendees change; a new title or description tells nobody).
`api_tokens.expires_at`: an optional end of a token's life.

Revision ID: 0004
Revises: 0006
Create Date: 2026-12-02 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): on SQLite a table copy would drop the no-overlap triggers.
    op.add_column("reservations", sa.Column("invitation_due", sa.Boolean(), server_default=sa.false(),
                                            nullable=False))
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("invitation_due")

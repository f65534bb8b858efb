"""a person's reservations by end: the live-reservations cap counts them without reading their history

Revision ID: 0014
Revises: 0010
Create Date: 2026-12-02 11:20:00
"""

from alembic import op

revision = "0014"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (organiser_email, end_at) serves every lookup the organiser-only index served, and the cap's
    # "not ended yet" range as well; plain create/drop (not a batch copy, which loses SQLite's triggers).
    op.create_index("ix_reservations_organiser_end", "reservations", ["organiser_email", "end_at"])
    op.drop_index("ix_reservations_organiser", table_name="reservations")


def downgrade() -> None:
    op.create_index("ix_reservations_organiser", "reservations", ["organiser_email"])
    op.drop_index("ix_reservations_organiser_end", table_name="reservations")

"""check-in: per-room check-in policy, check-in/release/end-early on reservations, room displays

Adds the `released` status and the `display` source to the two CHECK constraints. On SQLite
that needs a copy of the reservations table, which drops its no-overlap triggers: they are
created again here, exactly as 0001 made them.

Revision ID: 0006
Revises: 0002
Create Date: 2026-12-02 06:30:00
"""

import sqlalchemy as sa
from alembic import op

import roombridge.db

revision = "0006"
down_revision = "0002"
branch_labels = None
depends_on = None

STATUSES = ("pending", "confirmed", "failed", "cancelled", "conflict")
SOURCES = ("web", "api", "google")


def _enum(values: tuple[str, ...], name: str, check: bool = True) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=check, length=16)


# Keep in step with roombridge.models.LIVE_STATUSES (and 0001).
LIVE = "('pending', 'confirmed', 'failed')"
SQLITE_OVERLAP_CHECK = f"""
    SELECT RAISE(ABORT, 'reservation_overlap')
    WHERE NEW.status IN {LIVE} AND EXISTS (
        SELECT 1 FROM reservations r
        WHERE r.room_id = NEW.room_id AND r.id IS NOT NEW.id AND r.status IN {LIVE}
          AND r.start_at < NEW.end_at AND r.end_at > NEW.start_at
    );
"""


def _replace_checks(statuses: tuple[str, ...], sources: tuple[str, ...], old_statuses, old_sources) -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("reservations", recreate="always") as batch:
            batch.alter_column("status", type_=_enum(statuses, "reservation_status"),
                               existing_type=_enum(old_statuses, "reservation_status"), existing_nullable=False)
            batch.alter_column("source", type_=_enum(sources, "reservation_source"),
                               existing_type=_enum(old_sources, "reservation_source"), existing_nullable=False)
        for name, event in (("insert", "INSERT"), ("update", "UPDATE OF room_id, start_at, end_at, status")):
            op.execute(f"DROP TRIGGER IF EXISTS reservations_no_overlap_{name}")
            op.execute(f"CREATE TRIGGER reservations_no_overlap_{name} BEFORE {event} ON reservations "
                       f"BEGIN {SQLITE_OVERLAP_CHECK} END")
        return
    for column, name, values in (("status", "reservation_status", statuses), ("source", "reservation_source", sources)):
        op.drop_constraint(name, "reservations", type_="check")
        listed = ", ".join(f"'{v}'" for v in values)
        op.create_check_constraint(name, "reservations", f"{column} IN ({listed})")


def upgrade() -> None:
    # Plain ADD COLUMN first; the CHECKs change last (on SQLite one table copy carries them all).
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("checkin_required", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("checkin_opens_minutes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("checkin_grace_minutes", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("checkin_deadline_action",
                                   _enum(("release", "flag"), "checkin_deadline_action", check=False), nullable=True))
    when = roombridge.db.UTCDateTime(timezone=True)
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("private", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("checked_in_at", when, nullable=True))
        batch.add_column(sa.Column("checked_in_by", sa.String(254), nullable=True))
        batch.add_column(sa.Column("missed_checkin_at", when, nullable=True))
        batch.add_column(sa.Column("released_at", when, nullable=True))
        batch.add_column(sa.Column("release_reason", _enum(("no_show",), "release_reason", check=False),
                                   nullable=True))
        batch.add_column(sa.Column("ended_early_at", when, nullable=True))
        batch.add_column(sa.Column("original_end_at", when, nullable=True))
    _replace_checks(STATUSES + ("released",), SOURCES + ("display",), STATUSES, SOURCES)
    op.create_index("ix_reservations_start", "reservations", ["start_at"])

    op.create_table(
        "room_displays",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(12), nullable=False),
        sa.Column("created_by", sa.String(254), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("last_seen_at", when, nullable=True),
        sa.Column("revoked_at", when, nullable=True),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_room_displays_room_id", "room_displays", ["room_id"])


def downgrade() -> None:
    op.drop_index("ix_room_displays_room_id", "room_displays")
    op.drop_table("room_displays")
    op.drop_index("ix_reservations_start", "reservations")
    op.execute("DELETE FROM reservations WHERE status = 'released' OR source = 'display'")
    _replace_checks(STATUSES, SOURCES, STATUSES + ("released",), SOURCES + ("display",))
    with op.batch_alter_table("reservations", recreate="never") as batch:
        for column in ("original_end_at", "ended_early_at", "release_reason", "released_at", "missed_checkin_at",
                       "checked_in_by", "checked_in_at", "private"):
            batch.drop_column(column)
    with op.batch_alter_table("rooms", recreate="never") as batch:
        for column in ("checkin_deadline_action", "checkin_grace_minutes", "checkin_opens_minutes",
                       "checkin_required"):
            batch.drop_column(column)

"""Bearer tokens for the JSON API: created once, shown once, stored only as SHA-256.

A token is ``rb_`` + 43 url-safe random characters (256 bits), so a fast unsalted hash
is enough: nothing about it can be guessed, and the hash lets one indexed lookup find it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from roombridge.booking import normalise_email
from roombridge.models import ApiToken, audit
from roombridge.unit_of_work import unit_of_work

PREFIX = "rb_"
# Writing last_used_at on every request would turn each read into a write; once a minute says enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewToken:
    token: str  # the only time the secret exists outside its owner's hands
    record: ApiToken


def create(session: Session, email: str, *, actor: str = "system") -> NewToken:
    """Make a token for `email` (a valid address; ValueError if not) and store it."""
    owner = normalise_email(email)
    token = PREFIX + secrets.token_urlsafe(32)
    with unit_of_work(session):
        record = ApiToken(user_email=owner, token_hash=hash_token(token), prefix=token[: len(PREFIX) + 6])
        session.add(record)
        session.flush()
        audit(session, actor, "api_token.create", record, user_email=owner, prefix=record.prefix)
    return NewToken(token, record)


def verify(session: Session, token: str | None, now: datetime | None = None) -> str | None:
    """The owner's e-mail if `token` is a live token, else None."""
    if not token or not token.startswith(PREFIX) or len(token) > 200:
        return None
    record = session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    # The lookup is by hash, and comparing the hash again in constant time costs nothing.
    if record is None or record.revoked_at is not None or not secrets.compare_digest(
        record.token_hash, hash_token(token)
    ):
        return None
    now = now or datetime.now(UTC)
    if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
        with unit_of_work(session):
            session.execute(sa.update(ApiToken).where(ApiToken.id == record.id).values(last_used_at=now))
    return record.user_email


def revoke(session: Session, token_or_prefix: str, *, email: str | None = None, actor: str = "system") -> int:
    """Revoke the token given whole, or every live token with that shown prefix (of `email`, if given).

    Returns how many were revoked.
    """
    query = sa.select(ApiToken).where(ApiToken.revoked_at.is_(None))
    if token_or_prefix.startswith(PREFIX) and len(token_or_prefix) > len(PREFIX) + 6:
        query = query.where(ApiToken.token_hash == hash_token(token_or_prefix))
    else:
        query = query.where(ApiToken.prefix == token_or_prefix)
    if email:
        query = query.where(ApiToken.user_email == email.strip().lower())
    now = datetime.now(UTC)
    with unit_of_work(session):
        records = session.scalars(query).all()
        for record in records:
            record.revoked_at = now
            audit(session, actor, "api_token.revoke", record, user_email=record.user_email, prefix=record.prefix)
    return len(records)


def list_tokens(session: Session, email: str | None = None) -> list[ApiToken]:
    query = sa.select(ApiToken).order_by(ApiToken.user_email, ApiToken.created_at)
    if email:
        query = query.where(ApiToken.user_email == email.strip().lower())
    return list(session.scalars(query))

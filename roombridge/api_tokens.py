"""Bearer tokens for the JSON API: created once, shown once, stored only as SHA-256.

A token is ``rb_`` + 43 url-safe random characters (256 bits), so a fast unsalted hash
is enough: nothing about it can be guessed, and the hash lets one indexed lookup find it.
A token may expire (`expires_in`); an expired or revoked one answers 401. Owners list and
revoke their own tokens on a page, admins everyone's in the console, the CLI too.
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


def create(session: Session, email: str, *, actor: str = "system", expires_in: timedelta | None = None,
           now: datetime | None = None) -> NewToken:
    """Make a token for `email` (a valid address; ValueError if not), living `expires_in` if given, and store it."""
    owner = normalise_email(email)
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValueError("a token's life must be longer than nothing")
    token = PREFIX + secrets.token_urlsafe(32)
    expires_at = (now or datetime.now(UTC)) + expires_in if expires_in is not None else None
    with unit_of_work(session):
        record = ApiToken(user_email=owner, token_hash=hash_token(token), prefix=token[: len(PREFIX) + 6],
                          expires_at=expires_at)
        session.add(record)
        session.flush()
        audit(session, actor, "api_token.create", record, user_email=owner, prefix=record.prefix,
              expires_at=expires_at.isoformat() if expires_at else None)
    return NewToken(token, record)


def verify(session: Session, token: str | None, now: datetime | None = None) -> str | None:
    """The owner's e-mail if `token` is a live token, else None."""
    if not token or not token.startswith(PREFIX) or len(token) > 200:
        return None
    record = session.scalar(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    now = now or datetime.now(UTC)
    # The lookup is by hash, and comparing the hash again in constant time costs nothing.
    if record is None or not record.is_live(now) or not secrets.compare_digest(record.token_hash, hash_token(token)):
        return None
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


def revoke_by_id(session: Session, token_id: int, *, actor: str, owner: str | None = None) -> ApiToken | None:
    """Revoke one token by its id: the owner's own (`owner` given), or anyone's (an admin). None if no such token."""
    with unit_of_work(session):
        record = session.get(ApiToken, token_id)
        if record is None or (owner is not None and record.user_email != owner.strip().lower()):
            return None
        if record.revoked_at is None:
            record.revoked_at = datetime.now(UTC)
            audit(session, actor, "api_token.revoke", record, user_email=record.user_email, prefix=record.prefix)
    return record


def list_tokens(session: Session, email: str | None = None) -> list[ApiToken]:
    query = sa.select(ApiToken).order_by(ApiToken.user_email, ApiToken.created_at)
    if email:
        query = query.where(ApiToken.user_email == email.strip().lower())
    return list(session.scalars(query))

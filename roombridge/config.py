"""Configuration, read from the environment once, when the app is created.

Never read at import time (Flask's docs/config.rst): tests and the worker build apps
with different settings in one process.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path

GOOGLE_CALENDAR_API_URL = "https://www.googleapis.com/calendar/v3/"
CALENDAR_EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"


class ConfigError(RuntimeError):
    """The environment does not describe a runnable app."""


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _emails(value: str) -> frozenset[str]:
    return frozenset(e.strip().lower() for e in value.split(",") if e.strip())


def _domains(value: str) -> frozenset[str]:
    return frozenset(d.strip().lower().lstrip("@") for d in value.split(",") if d.strip())


# Comma-separated settings, parsed into sets.
_SETS = {"ADMIN_EMAILS": _emails, "ALLOWED_DOMAINS": _domains, "ATTENDEE_DOMAINS": _domains}


@dataclass(frozen=True)
class Config:
    """Every setting the app understands; the names are the environment variables."""

    ENV: str = "production"  # production | development | test; a deploy that forgets it fails closed
    SECRET_KEY: str = ""
    DATABASE_URL: str = ""  # empty: SQLite under instance/
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    GOOGLE_SERVICE_ACCOUNT_FILE: str = ""
    GOOGLE_CALENDAR_API_URL: str = GOOGLE_CALENDAR_API_URL
    GOOGLE_DELEGATED_USER: str = ""  # set: delegated mode; empty: room mode
    WEBHOOK_BASE_URL: str = "http://127.0.0.1:5000"
    AUTH_MODE: str = "oidc"  # oidc | dev (development only)
    OIDC_ISSUER: str = "https://accounts.google.com"
    OIDC_CLIENT_ID: str = ""
    OIDC_CLIENT_SECRET: str = ""
    ADMIN_EMAILS: frozenset[str] = field(default_factory=frozenset)
    # The e-mail domains whose people may sign in (Google's `hd` claim must be one of them too).
    ALLOWED_DOMAINS: frozenset[str] = field(default_factory=frozenset)
    SESSION_LIFETIME_HOURS: float = 12.0
    # Behind a proxy: the public address people use (builds the OIDC redirect URI and absolute
    # links), and/or how many proxies in front set X-Forwarded-* headers we may believe.
    PUBLIC_BASE_URL: str = ""
    PROXY_FIX_HOPS: int = 0
    SMTP_URL: str = ""  # smtp://host:port; empty: invitations are logged, not sent
    MAIL_FROM: str = "roombridge@localhost"
    # Booking policy defaults; rooms may override them.
    BOOKABLE_HOURS: str = "07:00-20:00"
    MAX_DURATION_MINUTES: int = 480
    MAX_DAYS_AHEAD: int = 180
    MIN_NOTICE_MINUTES: int = 0
    MAX_OCCURRENCES: int = 52  # occurrences of one series
    # What one person may do (admins are exempt): see "Limits per person" in the README.
    # Attendees' e-mail domains (empty: ALLOWED_DOMAINS; both empty: any domain).
    ATTENDEE_DOMAINS: frozenset[str] = field(default_factory=frozenset)
    MAX_ATTENDEES: int = 50
    INVITATIONS_PER_HOUR: int = 1000  # invitation and update mails (one per recipient) a person causes
    MAX_LIVE_RESERVATIONS: int = 200  # reservations a person holds that have not ended
    MAX_HOURS_PER_ROOM_PER_WEEK: float = 40.0  # a person's booked hours in one room in one week
    BOOKING_WRITES_PER_MINUTE: int = 30  # bookings, edits and cancellations through the pages and the API
    # Check-in defaults; rooms may override them (Room.checkin_*). The window opens
    # CHECKIN_OPENS_MINUTES before the start and closes CHECKIN_GRACE_MINUTES after it; then the
    # deadline action (release or flag) applies. A series released on CHECKIN_SERIES_END_AFTER
    # consecutive occurrences is ended (0: never).
    CHECKIN_REQUIRED: bool = False
    CHECKIN_OPENS_MINUTES: int = 10
    CHECKIN_GRACE_MINUTES: int = 15
    CHECKIN_DEADLINE_ACTION: str = "release"  # release | flag
    CHECKIN_SERIES_END_AFTER: int = 3
    # Google calls: retries inside one call for rate limits and 5xx, with jittered backoff.
    GOOGLE_MAX_ATTEMPTS: int = 4
    GOOGLE_RETRY_BASE_SECONDS: float = 0.5
    GOOGLE_TIMEOUT_SECONDS: float = 30.0
    # The Calendar calls a minute every process together may make (roombridge/call_budget.py):
    # below Google's 600 per user per minute, for headroom.
    GOOGLE_CALLS_PER_MINUTE: int = 500
    # The log of Google calls per room (roombridge/call_log.py): rows older than this are deleted.
    GOOGLE_CALL_LOG_RETENTION_DAYS: int = 14
    METRICS_TOKEN: str = ""  # GET /metrics answers only to "Bearer <this>"; empty: not served
    # Sync and channels.
    SYNC_WINDOW_DAYS_BACK: int = 30
    SYNC_WINDOW_DAYS_AHEAD: int = 365
    SYNC_MIN_INTERVAL_SECONDS: float = 1.0
    CHANNEL_TTL_SECONDS: int = 604800
    CHANNEL_RENEW_WITHIN_SECONDS: int = 86400
    # The rolling safety net (roombridge/sweep.py): every room swept at least once per max age,
    # planned every interval (its tick), at the pace the call budget allows.
    SAFETY_SYNC_INTERVAL_SECONDS: int = 60
    SAFETY_SYNC_MAX_AGE_SECONDS: int = 3600
    SCHEDULER_TICK_SECONDS: float = 30.0
    # Insights: how often the monthly rollup sums the latest whole months again (roombridge/insights.py).
    INSIGHTS_ROLLUP_INTERVAL_SECONDS: int = 3600

    @property
    def delegated_mode(self) -> bool:
        return bool(self.GOOGLE_DELEGATED_USER)

    @property
    def attendee_domains(self) -> frozenset[str]:
        """The domains attendees may have; empty means any."""
        return self.ATTENDEE_DOMAINS or self.ALLOWED_DOMAINS

    @property
    def production(self) -> bool:
        return self.ENV == "production"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Config:
        """Build from `environ` (default os.environ); `overrides` win, for tests."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name in overrides:
                values[f.name] = overrides.pop(f.name)
                continue
            raw = environ.get(f.name) or environ.get("ROOMBRIDGE_" + f.name)
            if raw is None or raw == "":
                continue
            if f.type == "int":
                values[f.name] = int(raw)
            elif f.type == "float":
                values[f.name] = float(raw)
            elif f.type == "bool":
                values[f.name] = _bool(raw)
            elif f.name in _SETS:
                values[f.name] = _SETS[f.name](raw)
            else:
                values[f.name] = raw
        if overrides:
            raise ConfigError(f"unknown settings: {', '.join(sorted(overrides))}")
        for name, parse in _SETS.items():  # overrides may be a string or any collection of strings
            value = values.get(name)
            if value is not None and not isinstance(value, frozenset):
                values[name] = parse(value if isinstance(value, str) else ",".join(value))
        config = cls(**values)
        return config.validated()

    def validated(self) -> Config:
        if self.ENV not in {"development", "production", "test"}:
            raise ConfigError(f"ENV must be development, production or test, not {self.ENV!r}")
        if self.AUTH_MODE not in {"dev", "oidc"}:
            raise ConfigError(f"AUTH_MODE must be dev or oidc, not {self.AUTH_MODE!r}")
        if not 0 < self.SESSION_LIFETIME_HOURS <= 24 * 31:
            raise ConfigError("SESSION_LIFETIME_HOURS must be more than 0 and at most 744 (31 days)")
        for name in ("MAX_ATTENDEES", "INVITATIONS_PER_HOUR", "MAX_LIVE_RESERVATIONS", "MAX_HOURS_PER_ROOM_PER_WEEK",
                     "BOOKING_WRITES_PER_MINUTE", "MAX_OCCURRENCES"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be more than 0")
        if self.CHECKIN_DEADLINE_ACTION not in {"release", "flag"}:
            raise ConfigError(f"CHECKIN_DEADLINE_ACTION must be release or flag, not {self.CHECKIN_DEADLINE_ACTION!r}")
        if self.CHECKIN_OPENS_MINUTES < 0 or self.CHECKIN_GRACE_MINUTES < 0 or self.CHECKIN_SERIES_END_AFTER < 0:
            raise ConfigError("CHECKIN_OPENS_MINUTES, CHECKIN_GRACE_MINUTES and CHECKIN_SERIES_END_AFTER "
                              "must be 0 or more")
        if not 0 < self.SAFETY_SYNC_INTERVAL_SECONDS <= self.SAFETY_SYNC_MAX_AGE_SECONDS:
            raise ConfigError("SAFETY_SYNC_INTERVAL_SECONDS must be more than 0 and at most "
                              "SAFETY_SYNC_MAX_AGE_SECONDS")
        if self.GOOGLE_CALL_LOG_RETENTION_DAYS <= 0:
            raise ConfigError("GOOGLE_CALL_LOG_RETENTION_DAYS must be more than 0")
        if self.PROXY_FIX_HOPS < 0:
            raise ConfigError("PROXY_FIX_HOPS must be 0 or more")
        if self.PUBLIC_BASE_URL and not self.PUBLIC_BASE_URL.startswith(("https://", "http://")):
            raise ConfigError("PUBLIC_BASE_URL must be an absolute http(s) URL, e.g. https://rooms.example.com")
        if self.production:
            if self.AUTH_MODE == "dev":
                raise ConfigError("AUTH_MODE=dev lets anyone pick an account; refused in production "
                                  "(set ENV=development for the demo)")
            if not self.SECRET_KEY:
                raise ConfigError("SECRET_KEY must be set in production")
            if self.AUTH_MODE == "oidc" and not self.ALLOWED_DOMAINS:
                raise ConfigError("ALLOWED_DOMAINS must name your organisation's e-mail domains in production, "
                                  "or any Google account could sign in")
        return self

    def database_url(self, instance_path: str) -> str:
        if self.DATABASE_URL:
            return self.DATABASE_URL
        Path(instance_path).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(instance_path) / 'roombridge.sqlite3'}"

    def secret_key(self) -> str:
        # Development without a key gets a random one: sessions end with the process.
        return self.SECRET_KEY or secrets.token_hex(32)

from __future__ import annotations

import pytest

from roombridge.config import Config, ConfigError
from webapp import create_app


def test_production_refuses_to_start_without_secret_key():
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(Config.from_env({"ENV": "production", "AUTH_MODE": "oidc"}))


def test_production_refuses_dev_sign_in():
    with pytest.raises(ConfigError, match="AUTH_MODE=dev"):
        Config.from_env({"ENV": "production", "SECRET_KEY": "x" * 32, "AUTH_MODE": "dev"})


def test_production_and_oidc_are_the_defaults_and_fail_closed():
    """A deploy that forgets ENV and AUTH_MODE gets production and Google Sign-In, not the demo picker."""
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Config.from_env({})
    with pytest.raises(ConfigError, match="ALLOWED_DOMAINS"):
        Config.from_env({"SECRET_KEY": "x" * 32})
    with pytest.raises(ConfigError, match="AUTH_MODE=dev"):
        Config.from_env({"SECRET_KEY": "x" * 32, "AUTH_MODE": "dev", "ALLOWED_DOMAINS": "example.com"})
    config = Config.from_env({"SECRET_KEY": "x" * 32, "ALLOWED_DOMAINS": "Example.com, @branch.example.org"})
    assert config.production and config.AUTH_MODE == "oidc"
    assert config.ALLOWED_DOMAINS == {"example.com", "branch.example.org"}


def test_development_allows_the_demo_picker_and_open_oidc():
    assert Config.from_env({"ENV": "development", "AUTH_MODE": "dev"}).AUTH_MODE == "dev"
    assert not Config.from_env({"ENV": "development"}).ALLOWED_DOMAINS


@pytest.mark.parametrize("settings, problem", [
    ({"PUBLIC_BASE_URL": "rooms.example.com"}, "PUBLIC_BASE_URL"),
    ({"PROXY_FIX_HOPS": "-1"}, "PROXY_FIX_HOPS"),
    ({"SESSION_LIFETIME_HOURS": "0"}, "SESSION_LIFETIME_HOURS"),
])
def test_bad_web_settings_are_refused(settings, problem):
    with pytest.raises(ConfigError, match=problem):
        Config.from_env({"ENV": "development", **settings})


def test_values_come_from_the_environment_with_types():
    config = Config.from_env(
        {
            "ENV": "development",
            "DATABASE_URL": "postgresql+psycopg://u@h/db",
            "ADMIN_EMAILS": "Admin@Example.com, ops@example.com",
            "GOOGLE_DELEGATED_USER": "booking@example.com",
            "MAX_DURATION_MINUTES": "90",
        }
    )
    assert config.DATABASE_URL == "postgresql+psycopg://u@h/db"
    assert config.ADMIN_EMAILS == {"admin@example.com", "ops@example.com"}
    assert config.delegated_mode and config.MAX_DURATION_MINUTES == 90


def test_room_mode_is_the_default_and_sqlite_lives_under_instance(tmp_path):
    config = Config.from_env({"ENV": "development"})
    assert not config.delegated_mode
    assert config.database_url(str(tmp_path)) == f"sqlite:///{tmp_path / 'roombridge.sqlite3'}"


def test_unknown_override_is_an_error():
    with pytest.raises(ConfigError, match="NOPE"):
        Config.from_env({}, NOPE=1)


def test_the_google_call_log_is_kept_14_days_unless_set_and_never_0():
    assert Config.from_env({"ENV": "development"}).GOOGLE_CALL_LOG_RETENTION_DAYS == 14
    assert Config.from_env({"ENV": "development", "GOOGLE_CALL_LOG_RETENTION_DAYS": "3"}) \
        .GOOGLE_CALL_LOG_RETENTION_DAYS == 3
    with pytest.raises(ConfigError, match="GOOGLE_CALL_LOG_RETENTION_DAYS"):
        Config.from_env({"ENV": "development", "GOOGLE_CALL_LOG_RETENTION_DAYS": "0"})

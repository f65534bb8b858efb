from __future__ import annotations

import pytest

from roombridge.config import Config, ConfigError
from webapp import create_app


def test_production_refuses_to_start_without_secret_key():
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(Config.from_env({"ENV": "production", "AUTH_MODE": "oidc"}))


def test_production_refuses_dev_sign_in():
    with pytest.raises(ConfigError, match="AUTH_MODE=dev"):
        Config.from_env({"ENV": "production", "SECRET_KEY": "x" * 32})


def test_values_come_from_the_environment_with_types():
    config = Config.from_env(
        {
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
    config = Config.from_env({})
    assert not config.delegated_mode
    assert config.database_url(str(tmp_path)) == f"sqlite:///{tmp_path / 'roombridge.sqlite3'}"


def test_unknown_override_is_an_error():
    with pytest.raises(ConfigError, match="NOPE"):
        Config.from_env({}, NOPE=1)

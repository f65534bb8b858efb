"""The Flask application factory."""

from __future__ import annotations

from flask import Flask

import jobs
from roombridge.app import init_core
from roombridge.config import Config


def create_app(config: Config | None = None, **overrides) -> Flask:
    """Build the app from `config`, or from the environment with `overrides` on top."""
    config = config or Config.from_env(**overrides)
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(
        ROOMBRIDGE=config,
        SECRET_KEY=config.secret_key(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.ENV != "development" and config.ENV != "test",
        TESTING=config.ENV == "test",
    )
    init_core(app, config)
    jobs.install(app)  # what the core announces after a commit runs as jobs

    from webapp import cli, health, metrics
    from webhooks import bp as webhooks_bp

    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(webhooks_bp)
    cli.init_app(app)
    from webapp import auth, pages

    app.register_blueprint(pages.bp)
    from webapp import api

    app.register_blueprint(api.bp)
    from webapp import admin

    app.register_blueprint(admin.bp)
    auth.init_app(app)  # last: it exempts the webhook and API blueprints from CSRF
    return app

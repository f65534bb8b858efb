"""The Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask

from roombridge import db
from roombridge import queue as rq_wiring
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    db.init_app(app, config.database_url(app.instance_path))
    rq_wiring.init_app(app, config.REDIS_URL)

    from webapp import cli, health
    from webhooks import bp as webhooks_bp

    app.register_blueprint(health.bp)
    app.register_blueprint(webhooks_bp)
    cli.init_app(app)
    from webapp import auth, pages

    app.register_blueprint(pages.bp)
    from webapp import api

    app.register_blueprint(api.bp)
    app.register_blueprint(api.docs_bp)
    from webapp import admin

    app.register_blueprint(admin.bp)
    auth.init_app(app)  # last: it exempts the webhook and API blueprints from CSRF
    return app

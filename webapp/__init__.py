"""The Flask application factory."""

from __future__ import annotations

import sys
from datetime import timedelta

from flask import Flask

import jobs
from roombridge.app import init_core
from roombridge.config import Config, ConfigError

# gunicorn's "App failed to load": its master stops instead of respawning workers forever.
CONFIG_REFUSED_EXIT_CODE = 4


def app_from_environment() -> Flask:
    """The app of wsgi.py (web, worker, scheduler, flask CLI): a refused configuration exits the
    process with one line on stderr instead of a traceback."""
    try:
        return create_app()
    except ConfigError as exc:
        print(f"roombridge: refusing to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(CONFIG_REFUSED_EXIT_CODE) from None


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
        PERMANENT_SESSION_LIFETIME=timedelta(hours=config.SESSION_LIFETIME_HOURS),
        TESTING=config.ENV == "test",
    )
    from webapp import security

    security.init_app(app, config)
    init_core(app, config)
    jobs.install(app)  # what the core announces after a commit runs as jobs

    from webapp.api import IdConverter

    # `<id:...>` in every route, pages and API alike: an id past the database's integer is no such path (404).
    app.url_map.converters["id"] = IdConverter

    from webapp import cli, health, metrics

    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    cli.init_app(app)
    from webapp import auth, pages

    app.register_blueprint(pages.bp)
    from webapp import api

    app.register_blueprint(api.bp)
    app.register_blueprint(api.docs_bp)
    from webapp import admin

    app.register_blueprint(admin.bp)
    from webapp import google_calls

    app.register_blueprint(google_calls.bp)
    from webapp import feeds, insights

    app.register_blueprint(feeds.bp)
    app.register_blueprint(insights.bp)
    app.cli.add_command(feeds.feeds_cli)
    from webapp import display

    app.register_blueprint(display.bp)
    from webapp import limits

    limits.init_app(app)  # after every blueprint: it wraps the views marked @booking_writes
    auth.init_app(app)  # last: it exempts the API blueprints from CSRF
    security.refuse_unstorable_text(app)  # after CSRF's check
    from webhooks import PushReceiver

    # Outermost: Google's pushes are answered before any app-wide layer or hook above (see webhooks/).
    app.wsgi_app = PushReceiver(app, app.wsgi_app, security.answer_headers(config), security.MAX_BODY_BYTES)
    return app

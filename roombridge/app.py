"""The core's part of a Flask app: settings, database and Redis; no pages, no CLI.

The web app (webapp.create_app) builds on it, and so does the worker when a job runs
outside any app (jobs.worker_app): a job process never imports the web package.
"""

from __future__ import annotations

import logging

from flask import Flask

from roombridge import db
from roombridge import queue as rq_wiring
from roombridge.config import Config


def init_core(app: Flask, config: Config) -> None:
    """Give `app` the settings, the database engine and Redis."""
    app.config["ROOMBRIDGE"] = config
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db.init_app(app, config.database_url(app.instance_path))
    rq_wiring.init_app(app, config.REDIS_URL)


def create_core_app(config: Config | None = None, **overrides) -> Flask:
    """An app with only the core: for processes that run jobs and nothing else."""
    config = config or Config.from_env(**overrides)
    app = Flask("roombridge", instance_relative_config=True)
    app.config.update(TESTING=config.ENV == "test")
    init_core(app, config)
    return app

"""The baseline for webhook ingest: a bare Flask app whose only work is answering 204."""

from flask import Flask

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return "", 204


@app.post("/webhooks/google/calendar")
def push():
    return "", 204

"""Helpers of the emulator's own tests: the real Google client on the emulator, errors, a push receiver."""

import json
import threading
import time

from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.support import SERVICE_ACCOUNT

ACCOUNT = SERVICE_ACCOUNT  # the service account the emulator tests act as
EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
ROOM = "room-atlas@resource.calendar.google.com"
OTHER_ROOM = "room-borealis@resource.calendar.google.com"


def calendar_service(server, key, scopes=(EVENTS_SCOPE,), subject=None):
    """The real client, configured exactly as the app configures it."""
    credentials = service_account.Credentials.from_service_account_info(key, scopes=list(scopes))
    if subject:
        credentials = credentials.with_subject(subject)
    return build("calendar", "v3", credentials=credentials, static_discovery=True,
                 cache_discovery=False, client_options={"api_endpoint": server.calendar_api_url})


def error_of(excinfo):
    """(status, reason, message) of a googleapiclient HttpError."""
    error = excinfo.value
    assert isinstance(error, HttpError)
    body = json.loads(error.content)["error"]
    return error.resp.status, body["errors"][0]["reason"], body["message"]


def timed_event(start="2030-01-07T10:00:00Z", end="2030-01-07T11:00:00Z", **fields):
    return {"summary": "Meeting", "start": {"dateTime": start}, "end": {"dateTime": end},
            **fields}


class _Quiet(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass


class Receiver:
    """A real HTTP endpoint that records pushes and answers with scripted statuses."""

    def __init__(self, statuses=()):
        self.calls = []
        self._statuses = list(statuses)
        self._changed = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True,
                                   request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def _app(self, environ, start_response):
        request = Request(environ)
        with self._changed:
            self.calls.append({"headers": dict(request.headers), "body": request.get_data(),
                               "method": request.method})
            status = self._statuses.pop(0) if self._statuses else 204
            self._changed.notify_all()
        return Response(status=status)(environ, start_response)

    def wait_for(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.calls) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} pushes, got {len(self.calls)}")
                self._changed.wait(left)
            return list(self.calls)

    def states(self):
        with self._changed:
            return [c["headers"]["X-Goog-Resource-State"] for c in self.calls]

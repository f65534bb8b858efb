"""EmulatorServer: the emulator on a real port, in a background thread."""

import threading

from werkzeug.serving import WSGIRequestHandler, make_server

from .app import create_app
from .push import PushDispatcher
from .state import EmulatorState

DEFAULT_SERVICE_ACCOUNT = "roombridge@demo-project.iam.gserviceaccount.com"


class QuietRequestHandler(WSGIRequestHandler):
    """In-process servers keep test output clean; the request log has every API call."""

    def log_request(self, code="-", size="-"):
        pass


class EmulatorServer:
    """Serve the emulator over HTTP; ``port=0`` picks a free port.

    Settings not named here (``page_size_cap``, ``push_drop_ratio``, ``latency``,
    ``push_retry_cap``, ``push_max_attempts``, ``stopped_channel_delivers_once``) can be
    passed as keyword arguments too, or changed later with ``state.update_settings``.
    """

    def __init__(self, port=0, host="127.0.0.1", max_channel_ttl=604800, push_delay=0.0,
                 push_retry_base=1.0, access_token_ttl=3600, log_requests=False, **settings):
        self.host = host
        self._log_requests = log_requests
        self._requested_port = port
        self.state = EmulatorState(max_channel_ttl=max_channel_ttl, push_delay=push_delay,
                                   push_retry_base=push_retry_base,
                                   access_token_ttl=access_token_ttl, **settings)
        self.state.dispatcher = PushDispatcher(self.state)
        self._server = None
        self._thread = None

    @property
    def port(self):
        return self._server.server_port if self._server else self._requested_port

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def calendar_api_url(self):
        return self.url + "/calendar/v3/"

    @property
    def token_url(self):
        return self.url + "/token"

    def bind(self):
        """Open the listening socket (idempotent); ``url`` is final from here on."""
        if self._server is None:
            handler = WSGIRequestHandler if self._log_requests else QuietRequestHandler
            self._server = make_server(self.host, self._requested_port,
                                       create_app(self.state), threaded=True,
                                       request_handler=handler)
            self.state.base_url = self.url
        return self

    def start(self):
        self.bind()
        self.state.dispatcher.start()
        # A short poll interval keeps stop() quick; tests start and stop many servers.
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="emulator-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        """Run in the foreground (the CLI); Ctrl-C stops it."""
        self.bind()
        self.state.dispatcher.start()
        try:
            self._server.serve_forever()
        finally:
            self.state.dispatcher.stop()

    def stop(self):
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.state.dispatcher.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # Shortcuts for tests and scripts; everything else is on ``self.state``.

    def create_service_account(self, email=DEFAULT_SERVICE_ACCOUNT, delegation=False):
        """Register a service account and return its JSON key (dict)."""
        return self.state.create_service_account(email, delegation)

    def reset(self):
        self.state.reset()

"""Fixtures for the emulator's own tests: a live emulator, real clients, a push receiver."""

import pytest

from emulator import EmulatorServer

from .support import ACCOUNT, OTHER_ROOM, ROOM, Receiver, calendar_service


@pytest.fixture
def emulator():
    server = EmulatorServer(port=0, max_channel_ttl=604800, push_delay=0.0,
                            push_retry_base=0.05)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def key(emulator):
    """A service account sharing ROOM as writer (OTHER_ROOM exists but is not shared)."""
    state = emulator.state
    account_key = emulator.create_service_account(ACCOUNT)
    state.add_calendar(ROOM, "Atlas", "room", "Europe/London", capacity=8)
    state.add_calendar(OTHER_ROOM, "Borealis", "room", "Europe/London", capacity=4)
    state.share(ROOM, ACCOUNT, "writer")
    return account_key


@pytest.fixture
def service(emulator, key):
    return calendar_service(emulator, key)


@pytest.fixture
def receiver():
    receivers = []

    def start(statuses=()):
        made = Receiver(statuses)
        made._thread.start()
        receivers.append(made)
        return made

    yield start
    for made in receivers:
        made._server.shutdown()
        made._server.server_close()

"""`make run`'s launcher: a port already taken is reported before anything starts, with its cause."""

from __future__ import annotations

import os
import shutil
import socket

from scripts.devstack import taken_ports


def test_a_taken_port_is_reported_with_its_cause_and_its_holder():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        [problem] = taken_ports({port: ("127.0.0.1", "web")})
    assert problem.startswith(f"port {port} (web) on 127.0.0.1: Address already in use")
    if shutil.which("ss"):
        assert problem.endswith(f"(pid {os.getpid()})")
    assert taken_ports({port: ("127.0.0.1", "web")}) == []  # closed: free again


def test_a_port_taken_on_the_loopback_is_taken_for_a_server_on_every_address():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert len(taken_ports({port: ("0.0.0.0", "web")})) == 1  # noqa: S104 (the Procfile's web binds it)

from __future__ import annotations

import socket
import subprocess
import time

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis():
    """A Redis server of this test's own, so stopping it disturbs nobody else."""
    port = _free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def start():
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return proc
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    server = {"proc": start()}

    def stop():
        server["proc"].terminate()
        server["proc"].wait(10)

    def restart():
        server["proc"] = start()

    yield f"redis://127.0.0.1:{port}/0", stop, restart
    if server["proc"].poll() is None:
        stop()


def test_healthz_answers_without_dependencies(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_names_redis_while_it_is_down_and_recovers(make_app, own_redis):
    url, stop, restart = own_redis
    client = make_app(REDIS_URL=url).test_client()
    assert client.get("/readyz").status_code == 200

    stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert set(body["failures"]) == {"redis"}
    assert "Connection" in body["failures"]["redis"]

    restart()
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()


def test_readyz_names_the_database_when_it_is_unreachable(make_app):
    client = make_app(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none").test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert set(response.get_json()["failures"]) == {"database"}

from __future__ import annotations


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
    assert body["failures"] == {"redis": "unavailable"}  # which, not why: the reason is logged

    restart()
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()


def test_readyz_names_the_database_when_it_is_unreachable(make_app):
    client = make_app(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none").test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert set(response.get_json()["failures"]) == {"database"}

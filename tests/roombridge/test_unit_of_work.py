"""The unit of work: commits or rolls back at its end, joins an outer one, and announces only after commit."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from roombridge import channels, db
from roombridge.models import Room
from roombridge.unit_of_work import after_commit, announce, subscribe, unit_of_work
from tests.factories import make_room


@dataclass(frozen=True)
class Noted:
    name: str


def rooms_seen_by_another_session(app) -> list[str]:
    with db.session_factory(app)() as other:
        return list(other.scalars(sa.select(Room.name).order_by(Room.name)))


@pytest.fixture
def heard(app):
    """What a subscribed handler heard, with the rooms another session could see at that moment."""
    heard: list[tuple[str, list[str]]] = []
    subscribe(app, Noted, lambda event: heard.append((event.name, rooms_seen_by_another_session(app))))
    return heard


def test_announcements_run_once_the_commit_is_visible(app, session, heard):
    with unit_of_work(session):
        make_room(session, name="Atlas")
        announce(session, Noted("added"))
        assert heard == []
    assert heard == [("added", ["Atlas"])]


def test_nothing_is_stored_or_announced_when_the_body_raises(app, session, heard):
    with pytest.raises(ZeroDivisionError), unit_of_work(session):
        make_room(session, name="Atlas")
        announce(session, Noted("added"))
        after_commit(session, lambda: heard.append(("callback", [])))
        1 / 0  # noqa: B018
    assert heard == [] and rooms_seen_by_another_session(app) == []


def test_an_inner_unit_joins_the_outer_one(app, session, heard):
    with unit_of_work(session):
        with unit_of_work(session):
            make_room(session, name="Atlas")
            announce(session, Noted("inner"))
        assert rooms_seen_by_another_session(app) == [] and heard == []  # the outer unit commits
    assert heard == [("inner", ["Atlas"])]
    with pytest.raises(RuntimeError), unit_of_work(session, write=False), unit_of_work(session):
        pass  # a write cannot join a read: on SQLite its lock had to be taken at BEGIN


def test_a_handler_failing_after_the_commit_does_not_undo_it(app, session, heard):
    def broken(_event):
        raise ConnectionError("Redis is down")

    subscribe(app, Noted, broken)
    with unit_of_work(session):
        make_room(session, name="Atlas")
        announce(session, Noted("added"))
    assert rooms_seen_by_another_session(app) == ["Atlas"]
    assert heard == [("added", ["Atlas"])]  # the other handlers still ran


def test_code_that_calls_google_refuses_to_run_inside_a_unit(app, session):
    room = make_room(session)
    session.commit()
    with pytest.raises(RuntimeError, match="calls Google"), unit_of_work(session):
        channels.create_channel(session, None, room, app.config["ROOMBRIDGE"], db.utcnow())

"""Fixtures of the page tests."""

from __future__ import annotations

import pytest

from roombridge import db
from tests.factories import make_room


@pytest.fixture
def rooms(app):
    with app.app_context():
        session = db.session()
        atlas = make_room(session, name="Atlas", capacity=12, building="HQ", floor="1", features=["display"])
        cygnus = make_room(session, name="Cygnus", capacity=4, building="HQ", floor="2", features=["whiteboard"])
        session.commit()
        return {"atlas": atlas.id, "cygnus": cygnus.id}

"""schemathesis holds the API to its own OpenAPI description, through the app (WSGI).

Every check runs but one, with a fixed seed (derandomized) and a bounded number of examples,
as a real user and as an admin with real tokens, over a database holding rooms and
reservations of both. Per operation: EXAMPLES_PER_OPERATION schema-valid and as many
schema-invalid requests, for each of the two people.

PostgreSQL only: the API layer is the same on both databases, and a second run would double
the suite's longest test (about 70 s a run on 2 busy cores) for little.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from roombridge import api_tokens, db
from tests.factories import make_reservation, make_room

EXAMPLES_PER_OPERATION = 50
# What the checks expect, and the one check left out (with the reasons), is in the file the
# schemathesis command line reads too.
CONFIG_FILE = Path(__file__).parents[2] / "schemathesis.toml"


@pytest.fixture
def contract_app(make_app):
    # Hundreds of writes of one person: the limits per person would answer most of them 429.
    app = make_app(BOOKING_WRITES_PER_MINUTE=1_000_000, INVITATIONS_PER_HOUR=1_000_000)
    with app.app_context():
        session = db.session()
        room = make_room(session, name="Orion", capacity=4)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
        make_reservation(session, room, start, organiser_email="alice@example.com")
        make_reservation(session, room, start + timedelta(hours=2), organiser_email="bob@example.com")
        app.config["contract_tokens"] = {who: api_tokens.create(session, f"{who}@example.com").token
                                         for who in ("alice", "admin")}
        session.commit()
    return app


def _exercise(operation, mode: GenerationMode, token: str) -> None:
    """Up to EXAMPLES_PER_OPERATION generated requests to one operation, each response checked."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def run(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"})

    run()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("who", ["alice", "admin"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_the_api_keeps_its_contract(contract_app, who, mode):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", contract_app,
                                            config=SchemathesisConfig.from_path(CONFIG_FILE))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert not schema.config.checks_config_for(operation=operations[0], phase=None).use_after_free.enabled
    assert {op.label for op in operations} >= {  # every operation of the API, none dropped as unreadable
        "GET /rooms", "GET /rooms/{room_id}/availability", "GET /reservations", "POST /reservations",
        "GET /reservations/{reservation_id}", "PATCH /reservations/{reservation_id}",
        "DELETE /reservations/{reservation_id}", "POST /reservations/{reservation_id}/retry"}
    for operation in operations:
        _exercise(operation, mode, contract_app.config["contract_tokens"][who])

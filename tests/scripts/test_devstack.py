"""`make run`'s launcher: a port already taken is reported before anything starts, with its cause; the demo history."""

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


def test_the_demo_history_gives_insights_something_to_show(session):
    from datetime import UTC, datetime, timedelta

    from roombridge import insights
    from scripts.devstack import seed_history
    from tests.factories import make_room

    make_room(session, name="Big", capacity=20)
    make_room(session, name="Small", capacity=4)
    today = datetime.now(UTC).date()
    made = seed_history(session, today)
    session.flush()
    found = insights.compute(session, today - timedelta(days=30), today)
    total = found.total
    assert total.bookings > 0 and made > total.bookings  # the cancelled ones are not counted
    assert total.checked_in_hours > 0 and total.released_hours > 0 and total.ended_early_hours > 0
    assert 0 < total.no_show_rate < 0.5
    assert all(total.sources[s] > 0 for s in insights.SOURCES)
    assert [f.name for f in found.rooms if f.oversized] == ["Big"]  # the big room, booked by two or three
    # Nothing within the check-in deadline scan's reach: the release job leaves the history alone.
    assert found.rooms and max(max(row) for row in insights.compute(session, today - timedelta(days=1),
                                                                      today).occupancy) == 0

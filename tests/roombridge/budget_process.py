"""A second (third...) process taking from the shared call budget, for tests/roombridge/test_call_budget.py.

``python -m tests.roombridge.budget_process hammer REDIS_URL BUDGET PERIOD KINDS GRANTS SECONDS``
takes tokens of the comma-separated KINDS in turn, as fast as the budget lets it, until it
holds GRANTS tokens or SECONDS have passed; prints one JSON line per token granted
(``{"kind", "at"}``, Redis' clock) and a last line ``{"refused": n}``.

``python -m tests.roombridge.budget_process gateway ROOM`` builds the app from the environment,
as a worker does, prints ``ready``, then for each KIND read from stdin lists ROOM's events
through a gateway of that kind and prints ``{"kind", "ok"}`` or ``{"kind", "error", "retry_after"}``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime


def hammer(redis_url: str, budget: str, period: str, kinds: str, grants: str, seconds: str) -> None:
    from redis import Redis

    from roombridge.call_budget import CallBudget

    limiter = CallBudget(Redis.from_url(redis_url), int(budget), period=float(period))
    kinds_in_turn = kinds.split(",")
    granted = refused = 0
    deadline = time.monotonic() + float(seconds)
    while granted < int(grants) and time.monotonic() < deadline:
        kind = kinds_in_turn[(granted + refused) % len(kinds_in_turn)]
        decision = limiter.acquire(kind, max_wait=0.2)
        if decision.granted:
            granted += 1
            print(json.dumps({"kind": kind, "at": decision.now}), flush=True)
        else:
            refused += 1
            time.sleep(min(decision.retry_after, 0.05))
    print(json.dumps({"refused": refused}), flush=True)


def gateway(room: str) -> None:
    from roombridge.gcal import CalendarGateway, GoogleError, OverBudget
    from webapp import create_app

    app = create_app()
    print("ready", flush=True)
    for line in sys.stdin:
        kind = line.strip()
        with app.app_context():
            try:
                listing = CalendarGateway.for_app(app, kind=kind).list_events(room, time_min=datetime(2030, 1, 1,
                                                                                                      tzinfo=UTC))
                list(listing.pages())
            except OverBudget as refused:
                print(json.dumps({"kind": kind, "error": refused.reason, "retry_after": refused.retry_after}),
                      flush=True)
            except GoogleError as error:
                print(json.dumps({"kind": kind, "error": error.reason}), flush=True)
            else:
                print(json.dumps({"kind": kind, "ok": True}), flush=True)


if __name__ == "__main__":
    {"hammer": hammer, "gateway": gateway}[sys.argv[1]](*sys.argv[2:])

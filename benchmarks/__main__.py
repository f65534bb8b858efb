"""python -m benchmarks [name ...] [--quick]: run the benchmarks and print their tables."""

from __future__ import annotations

import argparse
import importlib
import platform
import time
from datetime import UTC, datetime

MODULES = {
    "webhook": "benchmarks.webhook_ingest",
    "freshness": "benchmarks.freshness",
    "economy": "benchmarks.api_economy",
    "renewal": "benchmarks.renewal",
    "fullsync": "benchmarks.full_sync",
    "booking": "benchmarks.booking_load",
    "quota": "benchmarks.quota_scale",
    "insights": "benchmarks.insights",
    "calllog": "benchmarks.call_log",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *MODULES], metavar="name",
                        help=f"which to run (default: all): {', '.join(MODULES)}")
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes: a smoke run, not figures")
    args = parser.parse_args(argv)
    names = args.names or list(MODULES)
    print(f"# Roombridge benchmarks{' (quick)' if args.quick else ''}\n")
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, {platform.machine()}\n",
          flush=True)
    for name in names:
        started = time.monotonic()
        module = importlib.import_module(MODULES[name])
        for table in module.run(args.quick):
            print(table.render(), flush=True)
        print(f"({name}: {time.monotonic() - started:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

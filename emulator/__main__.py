"""python -m emulator: run the Google Calendar emulator in the foreground."""

import argparse
import logging
import os

from .demo import seed_demo
from .server import EmulatorServer

TRUE_WORDS = ("1", "true", "yes", "on")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m emulator",
                                     description="Local Google Calendar emulator.")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", choices=["demo"], help="load demo rooms, people and account")
    parser.add_argument("--max-channel-ttl", type=int, default=604800, metavar="SECONDS")
    parser.add_argument("--push-delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--key-out", metavar="PATH",
                        help="write the demo service-account key JSON here (with --seed demo)")
    parser.add_argument("--quotas", action="store_true",
                        default=os.environ.get("EMULATOR_QUOTAS", "").lower() in TRUE_WORDS,
                        help="enforce Google's per-minute quotas (also EMULATOR_QUOTAS=1)")
    parser.add_argument("--quota-per-user", type=int, default=600, metavar="CALLS")
    parser.add_argument("--quota-per-project", type=int, default=10000, metavar="CALLS")
    parser.add_argument("--calendar-write-interval", type=float, default=0.0, metavar="SECONDS",
                        help="refuse a write to a calendar sooner than this after the last one")
    args = parser.parse_args(argv)
    if args.key_out and not args.seed:
        parser.error("--key-out needs --seed demo")

    logging.basicConfig(level=logging.INFO)
    server = EmulatorServer(port=args.port, host=args.host,
                            max_channel_ttl=args.max_channel_ttl, push_delay=args.push_delay,
                            log_requests=True, quota_enabled=args.quotas,
                            quota_per_user=args.quota_per_user,
                            quota_per_project=args.quota_per_project,
                            calendar_write_interval=args.calendar_write_interval)
    server.bind()
    if args.seed == "demo":
        seed_demo(server, key_out=args.key_out)
    quotas = (f", quotas {args.quota_per_user}/min per user, {args.quota_per_project}/min per "
              "project" if args.quotas else "")
    print(f"Google Calendar emulator on {server.url} (API {server.calendar_api_url}{quotas})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

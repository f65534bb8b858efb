"""Run the whole system on one machine, on the embedded defaults: `make run`, or
`.venv/bin/python -m scripts.devstack` from the repository root.

Before anything starts: refuses at once, with the cause, when a port it needs is taken;
then seeds the demo: a fresh SQLite database under instance/ (migrated), the demo rooms in
scope with four weeks of past bookings (for Insights), an API token for alice@example.com,
and instance/demo.env for the command-line tools. Then it hands over to honcho, the
Procfile runner, with the repository's Procfile as it is (web, worker, scheduler) plus one
more line for the local Google Calendar emulator. Ctrl-C (or any process dying) makes
honcho stop every process group: SIGTERM, then SIGKILL after five seconds, so nothing is
left holding a port.

The emulator keeps its calendars in memory and makes a new service-account key each start,
so each start begins from a fresh demo database too: nothing here outlives the demo.
"""

from __future__ import annotations

import errno
import os
import secrets
import shlex
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"
BIN = Path(sys.executable).parent
DEMO_ENV_NAMES = ("ENV", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "GOOGLE_SERVICE_ACCOUNT_FILE",
                  "GOOGLE_CALENDAR_API_URL", "WEBHOOK_BASE_URL", "ADMIN_EMAILS")


def log(message: str) -> None:
    print(f"devstack | {message}", flush=True)


def port_holder(port: int) -> str:
    """Who listens on the port, as `ss` names it ("gunicorn (pid 123)"), or "" if unknown."""
    try:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if 'users:(("' not in out:
        return ""
    name, _, rest = out.split('users:(("', 1)[1].partition('"')
    pid = rest.split("pid=", 1)[1].split(",", 1)[0] if "pid=" in rest else "?"
    return f"{name} (pid {pid})"


def taken_ports(wanted: dict[int, tuple[str, str]]) -> list[str]:
    """One line per port of `wanted` ({port: (host, process)}) that cannot be bound now, with its cause."""
    problems = []
    for port, (host, process) in wanted.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is fine
            try:
                probe.bind((host, port))
            except OSError as error:
                cause = "Address already in use" if error.errno == errno.EADDRINUSE else error.strerror
                holder = port_holder(port)
                problems.append(f"port {port} ({process}) on {host}: {cause}"
                                + (f", held by {holder}" if holder else ""))
    return problems


def seed_rooms(env: dict[str, str]) -> None:
    """Put the emulator's demo rooms in scope in the app's database.

    Directly, not through `flask rooms add` (which asks Google first): Google, the emulator,
    is not running yet, and its demo seed shares every demo room with the demo service
    account as writer. The scheduler's first channel renewal, at its start, opens each
    room's push channel.
    """
    from emulator import DEMO_ROOMS
    from roombridge import db
    from roombridge.models import Room
    from webapp import create_app

    app = create_app(**{name: env[name] for name in ("ENV", "DATABASE_URL", "REDIS_URL", "SECRET_KEY")})
    with app.app_context():
        session = db.session()
        for spec in DEMO_ROOMS:
            session.add(Room(calendar_id=spec["email"], name=spec["name"], capacity=spec["capacity"],
                             building=spec["building"], floor=spec["floor"], features=spec["features"],
                             time_zone=spec["time_zone"], in_scope=True, access_role="writer"))
        session.commit()
        from datetime import UTC, datetime

        from roombridge import insights

        made = seed_history(session, datetime.now(UTC).date())
        session.commit()
        insights.refresh_rollup(session, datetime.now(UTC).date())  # the scheduler's job does it hourly after
    db.engine(app).dispose()
    log(f"seeded {made} past bookings: see Insights ({env['WEBHOOK_BASE_URL']}/admin/insights)")


HISTORY_DAYS = 28
PEOPLE = ("alice@example.com", "bob@example.com", "carol@example.com", "dan@example.com", "erin@example.com",
          "frank@example.com", "grace@example.com")


def seed_history(session, today) -> int:
    """A few weeks of past bookings in the demo rooms, so Insights has something to show.

    Weekdays from HISTORY_DAYS back to two days ago (older than the check-in deadline scan
    looks), two to four meetings a room a day: most checked in (some ended early), about one
    in five a no-show released, a few cancelled; made on the web, through the API, in Google
    Calendar or at the room display. The big room is mostly booked by two or three people,
    which the right-sizing list points out. Past only: nothing of it is written to Google.
    """
    import random
    from datetime import UTC, datetime, time, timedelta

    import sqlalchemy as sa

    from roombridge.models import ReleaseReason, Reservation, ReservationSource, ReservationStatus, Room

    rng = random.Random(16)  # the same demo every start
    sources = [ReservationSource.WEB] * 8 + [ReservationSource.GOOGLE] * 7 + [ReservationSource.API] * 3 + [
        ReservationSource.DISPLAY] * 2
    made = 0
    for room in session.scalars(sa.select(Room).order_by(Room.id)):
        for back in range(HISTORY_DAYS, 1, -1):
            day = today - timedelta(days=back)
            if day.weekday() >= 5:
                continue
            hour = 8 + rng.randrange(2)
            for _ in range(rng.randrange(2, 5)):
                start = datetime.combine(day, time(hour, rng.choice((0, 30))), room.zone).astimezone(UTC)
                minutes = rng.choice((30, 60, 60, 90, 120))
                end = start + timedelta(minutes=minutes)
                hour += minutes // 60 + 1 + rng.randrange(2)
                if hour > 17:
                    break
                crowd = rng.randrange(1, 3) if (room.capacity or 0) >= 12 else rng.randrange(0, 5)
                organiser, *attendees = rng.sample(PEOPLE, 1 + min(crowd, len(PEOPLE) - 1))
                reservation = Reservation(room_id=room.id, organiser_email=organiser, attendees=attendees,
                                          title=rng.choice(("Standup", "Planning", "1:1", "Design review",
                                                            "Customer call", "Interview", "Retro")),
                                          start_at=start, end_at=end, source=rng.choice(sources),
                                          status=ReservationStatus.CONFIRMED)
                fate = rng.random()
                if fate < 0.05:
                    reservation.status = ReservationStatus.CANCELLED
                elif fate < 0.25:
                    deadline = start + timedelta(minutes=15)
                    reservation.status, reservation.release_reason = ReservationStatus.RELEASED, ReleaseReason.NO_SHOW
                    reservation.missed_checkin_at = reservation.released_at = deadline
                else:
                    reservation.checked_in_at = start + timedelta(minutes=rng.randrange(-5, 10))
                    reservation.checked_in_by = organiser
                    if fate > 0.85 and minutes >= 60:
                        reservation.original_end_at = end
                        reservation.end_at = reservation.ended_early_at = end - timedelta(minutes=30)
                session.add(reservation)
                made += 1
    return made


def main() -> int:
    web_port = int(os.environ.get("PORT", "5000"))
    emulator_port = int(os.environ.get("EMULATOR_PORT", "8085"))
    # The Procfile's web process binds 0.0.0.0; the emulator binds the loopback only.
    problems = taken_ports({web_port: ("0.0.0.0", "web"), emulator_port: ("127.0.0.1", "emulator")})  # noqa: S104
    if problems:
        for problem in problems:
            log(problem)
        log("nothing started: stop what holds the port, or choose others with PORT=... EMULATOR_PORT=...")
        return 1

    INSTANCE.mkdir(exist_ok=True)
    database = INSTANCE / "demo.sqlite3"
    for leftover in INSTANCE.glob("demo.sqlite3*"):
        leftover.unlink()
    secret_file = INSTANCE / "secret_key"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_hex(32))
    key_file = INSTANCE / "service-account.json"
    key_file.unlink(missing_ok=True)  # the emulator writes this start's key; never read the last one's
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    web_url = f"http://127.0.0.1:{web_port}"

    env = dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the Procfile's gunicorn, flask, python: this venv's
        ENV="development",  # the only mode that allows AUTH_MODE=dev; explicit, whatever the default
        DATABASE_URL=f"sqlite:///{database}",
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        SECRET_KEY=secret_file.read_text().strip(),
        GOOGLE_SERVICE_ACCOUNT_FILE=str(key_file),
        GOOGLE_CALENDAR_API_URL=f"{emulator_url}/calendar/v3/",
        WEBHOOK_BASE_URL=web_url,
        AUTH_MODE=os.environ.get("AUTH_MODE", "dev"),
        ALLOWED_DOMAINS=os.environ.get("ALLOWED_DOMAINS", "example.com"),  # the demo people's domain
        OIDC_ISSUER=emulator_url,
        OIDC_CLIENT_ID="roombridge-dev",
        OIDC_CLIENT_SECRET="dev-secret",  # noqa: S106 (the emulator's demo client, not a secret)
        ADMIN_EMAILS=os.environ.get("ADMIN_EMAILS", "admin@example.com"),
        PYTHONUNBUFFERED="1",
        # Ctrl-C: gunicorn's workers get 3 s to finish a request (not 30), inside honcho's 5 s before SIGKILL.
        GUNICORN_CMD_ARGS=os.environ.get("GUNICORN_CMD_ARGS", "--graceful-timeout 3"),
    )
    flask = [str(BIN / "flask"), "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True)
    seed_rooms(env)
    token = subprocess.run([*flask, "tokens", "create", "alice@example.com"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    env_file = INSTANCE / "demo.env"
    env_file.write_text("".join(f"export {name}={shlex.quote(env[name])}\n" for name in DEMO_ENV_NAMES))

    # The repository's Procfile, verbatim, plus the emulator: the demo proves the Procfile.
    procfile = INSTANCE / "Procfile.demo"
    emulator_line = (f"emulator: python -m emulator --port {emulator_port} --seed demo "
                     f"--key-out {shlex.quote(str(key_file))}")
    procfile.write_text((ROOT / "Procfile").read_text().rstrip("\n") + "\n" + emulator_line + "\n")

    log(f"Roombridge: {web_url} (as soon as web is up, below)")
    log(f"  sign in as any demo person; admin@example.com has the admin console ({web_url}/admin)")
    log(f"  the Google Calendar emulator: {emulator_url} (control API: see emulator/__init__.py)")
    log(f"  an API token for alice@example.com: {token}")
    log(f"    curl -H 'Authorization: Bearer {token}' {web_url}/api/v1/rooms")
    log(f"  the CLI against this demo: . {env_file.relative_to(ROOT)} && .venv/bin/flask --app wsgi rooms list")
    log(f"  honcho runs {procfile.relative_to(ROOT)} (the Procfile plus the emulator); Ctrl-C stops everything.")
    honcho = str(BIN / "honcho")
    os.chdir(ROOT)
    # Our own venv's honcho, with fixed arguments (hence the noqa).
    os.execve(honcho, [honcho, "start", "--procfile", str(procfile), "--app-root", str(ROOT),  # noqa: S606
                       "--port", str(web_port)], env)
    return 0  # not reached: this process is honcho now


if __name__ == "__main__":
    sys.exit(main())

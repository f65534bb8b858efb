"""Run the whole system on one machine, on the embedded defaults: `make run`.

Starts the local Google Calendar emulator (seeded with demo rooms, people and a service
account), migrates a fresh SQLite database under instance/, then the three processes of
the Procfile (web, worker, scheduler), puts the demo rooms in scope once the web process
answers, and prints the URL. Ctrl-C stops everything; if one process dies, all stop.

The emulator keeps its calendars in memory, so each start begins from a fresh demo
database too (instance/demo.sqlite3): nothing here is meant to outlive the demo.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))  # run as a script: make the project's packages importable


def log(message: str) -> None:
    print(f"devstack | {message}", flush=True)


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback only)
                if answer.status < 500:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer within {seconds:.0f}s")
        time.sleep(0.2)


def pipe_output(name: str, proc: subprocess.Popen) -> None:
    for line in proc.stdout:
        print(f"{name:>9} | {line.rstrip()}", flush=True)


def main() -> int:
    web_port = int(os.environ.get("PORT", "5000"))
    emulator_port = int(os.environ.get("EMULATOR_PORT", "8085"))
    INSTANCE.mkdir(exist_ok=True)
    database = INSTANCE / "demo.sqlite3"
    for leftover in INSTANCE.glob("demo.sqlite3*"):
        leftover.unlink()
    secret_file = INSTANCE / "secret_key"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_hex(32))
    key_file = INSTANCE / "service-account.json"
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    web_url = f"http://127.0.0.1:{web_port}"

    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite:///{database}",
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        SECRET_KEY=secret_file.read_text().strip(),
        GOOGLE_SERVICE_ACCOUNT_FILE=str(key_file),
        GOOGLE_CALENDAR_API_URL=f"{emulator_url}/calendar/v3/",
        WEBHOOK_BASE_URL=web_url,
        ENV="development",  # the demo; the default is production, which refuses the demo picker
        AUTH_MODE=os.environ.get("AUTH_MODE", "dev"),
        ALLOWED_DOMAINS=os.environ.get("ALLOWED_DOMAINS", "example.com"),  # the demo people's domain
        OIDC_ISSUER=emulator_url,
        OIDC_CLIENT_ID="roombridge-dev",
        OIDC_CLIENT_SECRET="dev-secret",  # noqa: S106 (the emulator's demo client, not a secret)
        ADMIN_EMAILS=os.environ.get("ADMIN_EMAILS", "admin@example.com"),
        PYTHONUNBUFFERED="1",
    )
    flask = [str(BIN / "flask"), "--app", "wsgi"]
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, argv: list[str]) -> None:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        procs[name] = proc
        threading.Thread(target=pipe_output, args=(name, proc), daemon=True).start()

    def stop_all(*_args) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
    try:
        start(
            "emulator",
            [str(BIN / "python"), "-m", "emulator", "--port", str(emulator_port), "--seed", "demo",
             "--key-out", str(key_file)],
        )
        wait_for(f"{emulator_url}/_emulator/clock")
        log("Google Calendar emulator is up: " + emulator_url)

        subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True)
        start(
            "web",
            [str(BIN / "gunicorn"), "--workers", "2", "--threads", "4", "--bind", f"127.0.0.1:{web_port}",
             "--access-logfile", "-", "wsgi:app"],
        )
        start("worker", [*flask, "worker"])
        start("scheduler", [*flask, "scheduler"])
        wait_for(f"{web_url}/healthz")

        from emulator import DEMO_ROOMS

        for room in DEMO_ROOMS:
            subprocess.run(
                [*flask, "rooms", "add", room["email"], "--name", room["name"],
                 "--capacity", str(room["capacity"]), "--building", room["building"],
                 "--floor", str(room["floor"]), "--features", ",".join(room["features"]),
                 "--time-zone", room["time_zone"]],
                cwd=ROOT, env=env, check=False,
            )
        env_file = INSTANCE / "demo.env"
        env_file.write_text("".join(
            f"export {name}={shlex.quote(env[name])}\n"
            for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "GOOGLE_SERVICE_ACCOUNT_FILE",
                         "GOOGLE_CALENDAR_API_URL", "WEBHOOK_BASE_URL", "ADMIN_EMAILS")
        ))
        token = subprocess.run([*flask, "tokens", "create", "alice@example.com"], cwd=ROOT, env=env,
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        log(f"Roombridge is running: {web_url}")
        log(f"  sign in as any demo person; admin@example.com has the admin console ({web_url}/admin)")
        log(f"  the Google Calendar emulator: {emulator_url} (control API: see emulator/__init__.py)")
        log(f"  an API token for alice@example.com: {token}")
        log(f"    curl -H 'Authorization: Bearer {token}' {web_url}/api/v1/rooms")
        log(f"  the CLI against this demo: . {env_file.relative_to(ROOT)} && .venv/bin/flask --app wsgi rooms list")
        log("Ctrl-C stops everything.")
        while all(proc.poll() is None for proc in procs.values()):
            time.sleep(0.5)
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        log(f"{', '.join(dead)} stopped; stopping the rest")
        return 1
    except KeyboardInterrupt:
        log("stopping")
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())

"""Webhook ingest: Roombridge's push receiver beside bare Flask endpoints, under the same gunicorn.

All run with the Procfile's web command (production worker settings) on PostgreSQL and
Redis. Two measurements per target, alternated in one run:

- saturation: wrk on loopback, as many requests as it can (req/s, wrk's p50/p99);
- paced: an open-loop client sending exactly RATE req/s for a while; latency is counted
  from each request's *scheduled* send time, so a stall is not hidden (no coordinated
  omission).

Targets (issue #15): our req/s >= 0.9 of a bare Flask endpoint that makes one Redis call
before its 204 (the floor of any receiver that records a push before answering), and p99
< 5 ms at 200 req/s. A bare 204 is measured too, for the record.

The pushes are valid `exists` notifications as Google sends them: CHANNELS rooms, each with
its own live channel, and every channel's message numbers growing (a repeated number is a
replay, acknowledged without being counted). Each push is checked against its channel's
entry in Redis, counted, and asks for its room's sync, in one Redis call (no worker runs,
so after each room's first push the request coalesces with the one already waiting). The
pushes the app counted are compared with the requests sent: a difference is pushes taken
as replays, which happens only if one channel's pushes overtake each other on the way.
"""

from __future__ import annotations

import http.client
import os
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.harness import Stack, Table, free_port, log, percentile, require_wrk, verdict

NAME = "webhook"
PATH = "/webhooks/google/calendar"
RATE = 200
CHANNELS = 64  # rooms pushing at once, each on its own channel
WRK_THREADS = 2
WRK_CONNECTIONS = 16


def _wrk_script(channels: list[dict[str, str]], directory: Path) -> Path:
    """wrk's Lua: each wrk thread pushes on its own share of the channels, round robin, numbering
    each channel's pushes upwards from the time the run started (so no run replays another's)."""
    entries = ",\n".join("  {" + ", ".join(f'["{k}"] = "{v}"' for k, v in channel.items()) + "}"
                         for channel in channels)
    script = f"""
local channels = {{
{entries}
}}
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  mine = {{}}
  for i = tid + 1, #channels, {WRK_THREADS} do mine[#mine + 1] = channels[i] end
  base = math.floor(os.time() * 1000000)
  sent = 0
end
function request()
  sent = sent + 1
  local headers = mine[sent % #mine + 1]
  headers["X-Goog-Message-Number"] = string.format("%.0f", base + sent)
  return wrk.format("POST", nil, headers, "")
end
"""
    path = directory / "push.lua"
    path.write_text(script)
    return path


def _units(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def saturate(url: str, script: Path, seconds: int) -> dict:
    out = subprocess.run([require_wrk(), f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    found = {m.group(1): _units(m.group(2), m.group(3))
             for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sent = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": found.get("50"), "p99": found.get("99"), "sent": sent,
            "errors": int(non2xx.group(1)) if non2xx else 0}


def paced(port: int, channels: list[dict[str, str]], rate: int, seconds: float, connections: int = 8,
          path: str = PATH) -> dict:
    """Send `rate` req/s for `seconds`, round robin over the channels; latency from each request's scheduled time."""
    total = int(rate * seconds)
    start = time.monotonic() + 0.2
    base = time.time_ns() // 1000  # each channel's message numbers grow, from run to run too
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            headers = {**channels[n % len(channels)], "X-Goog-Message-Number": str(base + n)}
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            conn.request("POST", path, body=b"", headers=headers)
            response = conn.getresponse()
            response.read()
            done = time.monotonic()
            with lock:
                latencies.append((done - due) * 1000)
                statuses[response.status] = statuses.get(response.status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {"rps": len(latencies) / elapsed, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "sent": len(latencies), "errors": sum(c for s, c in statuses.items() if s >= 300)}


def run(quick: bool) -> list[Table]:
    wrk_seconds, paced_seconds, rounds = (3, 3, 1) if quick else (10, 15, 2)
    # More rounds on a busy machine: the verdicts read the median round, not the luckiest one.
    rounds = int(os.environ.get("BENCH_WEBHOOK_ROUNDS", rounds))
    with Stack("postgresql") as stack:
        room_ids = stack.add_rooms(CHANNELS)
        ours = stack.start_web()
        bare_port = free_port()
        stack.start_web(bare_port, "benchmarks.bare_app:app")
        stack.open_channels(room_ids)
        from roombridge import db, notifications
        from roombridge.models import WatchChannel

        with stack.app.app_context():
            channels = [{"X-Goog-Channel-ID": channel.id, "X-Goog-Channel-Token": channel.token,
                         "X-Goog-Resource-ID": channel.resource_id, "X-Goog-Resource-State": "exists",
                         "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/x/events"}
                        for channel in db.session().query(WatchChannel).order_by(WatchChannel.room_id)]
        script = _wrk_script(channels, stack.dir)
        targets = {"roombridge": (stack.web_port, PATH), "bare 204": (bare_port, PATH),
                   "bare + 1 Redis call": (bare_port, PATH + "/one-redis-call")}
        results: dict[str, dict[str, list[dict]]] = {t: {"wrk": [], "paced": []} for t in targets}
        for n in range(rounds):
            for target, (port, path) in targets.items():
                log(f"webhook: round {n + 1}, wrk on {target}")
                results[target]["wrk"].append(saturate(f"http://127.0.0.1:{port}{path}", script, wrk_seconds))
                log(f"webhook: round {n + 1}, {RATE} req/s paced on {target}")
                results[target]["paced"].append(paced(port, channels, RATE, paced_seconds, path=path))
        assert ours.alive()
        from roombridge.queue import redis

        with stack.app.app_context():  # no sync ran: the counts are all still in Redis
            ids = [channel["X-Goog-Channel-ID"] for channel in channels]
            pushes = (sum(c.push_count for c in db.session().query(WatchChannel))
                      + sum(p.count for p in notifications.pending_pushes(redis(), ids).values()))
        sent = sum(r["sent"] for kind in ("wrk", "paced") for r in results["roombridge"][kind])

    table = Table("Webhook ingest (gunicorn, Procfile settings, PostgreSQL + Redis)",
                  ["round", "target", "max req/s (wrk)", "wrk p50 ms", "wrk p99 ms", f"paced {RATE}/s p50 ms",
                   f"paced {RATE}/s p99 ms", "non-2xx"])
    for n in range(rounds):
        for target in targets:
            sat, pace = results[target]["wrk"][n], results[target]["paced"][n]
            table.add(n + 1, target, sat["rps"], sat["p50"], sat["p99"], pace["p50"], pace["p99"],
                      sat["errors"] + pace["errors"])
    ratios = [results["roombridge"]["wrk"][n]["rps"] / results["bare 204"]["wrk"][n]["rps"] for n in range(rounds)]
    floors = [results["bare + 1 Redis call"]["wrk"][n]["rps"] / results["bare 204"]["wrk"][n]["rps"]
              for n in range(rounds)]
    of_floor = [results["roombridge"]["wrk"][n]["rps"] / results["bare + 1 Redis call"]["wrk"][n]["rps"]
                for n in range(rounds)]
    p99s = [r["p99"] for r in results["roombridge"]["paced"]]
    bare_p99s = [r["p99"] for r in results["bare + 1 Redis call"]["paced"]]
    table.notes += [
        f"ratio roombridge / bare per round = {', '.join(f'{r:.2f}' for r in ratios)}",
        f"ratio bare + 1 Redis call / bare per round = {', '.join(f'{r:.2f}' for r in floors)} "
        "(the ceiling of any receiver that records the push before answering)",
        f"ratio roombridge / (bare + 1 Redis call) per round = {', '.join(f'{r:.2f}' for r in of_floor)}, "
        f"median {statistics.median(of_floor):.2f} "
        f"[target >= 0.9 (issue #15's yardstick): {verdict(statistics.median(of_floor) >= 0.9)}]",
        f"p99 at {RATE} req/s per round = {', '.join(f'{p:.1f}' for p in p99s)} ms, median "
        f"{statistics.median(p99s):.1f} [target < 5 ms: {verdict(statistics.median(p99s) < 5)}]; "
        f"the bare endpoint + 1 Redis call in the same rounds: {', '.join(f'{p:.1f}' for p in bare_p99s)} ms",
        f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{wrk_seconds}s; paced: {paced_seconds} s open loop with 8 "
        "connections, latency from each request's scheduled send time; rounds alternate the targets",
        f"pushes on {CHANNELS} channels, each channel's message numbers growing: {sent:,} sent to roombridge, "
        f"{pushes:,} counted as new (the difference: pushes taken as replays, give or take the requests in "
        "flight when wrk stopped, which the app counts and wrk does not)",
    ]
    return [table]

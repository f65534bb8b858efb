#!/usr/bin/env bash
# Install (Debian packages) and start what Roombridge needs on this machine, if missing.
#   scripts/ensure-services.sh redis            # for `make run` (SQLite is embedded)
#   scripts/ensure-services.sh redis postgres chromium   # for `make test`
set -euo pipefail

want=("$@")
has() { [[ " ${want[*]} " == *" $1 "* ]]; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
has redis && ! command -v redis-server >/dev/null && missing+=(redis-server redis-tools)
has postgres && ! command -v pg_ctlcluster >/dev/null && missing+=(postgresql postgresql-contrib)
has chromium && [ ! -x /usr/bin/chromium ] && missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if has redis && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

if has postgres && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting postgresql"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi

for _ in $(seq 1 50); do
  ok=1
  if has redis && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then ok=0; fi
  if has postgres && ! pg_isready -q -h 127.0.0.1 -p 5432; then ok=0; fi
  [ $ok = 1 ] && exit 0
  sleep 0.2
done
echo "services did not come up" >&2
exit 1

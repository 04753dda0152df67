#!/usr/bin/env bash
# What cross-node delivery adds: N back-to-back pairs of `rate` runs on a
# fresh three-node cluster each, cross-node only, then all peers on one
# node, and the median of the per-pair p50 differences. The VM's speed
# drifts by more than the effect, so only pairs run back to back compare.
#
#   bash deploy/cross-pairs.sh [PAIRS] [RATE]     # defaults: 6 pairs, 1000 msgs/s
#
# Needs Postgres on 127.0.0.1:5432 (or DATABASE_URL's server); ports 7990-7992.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${1:-6}
RATE=${2:-1000}
cargo build --release --bins >&2
BROKER=$PWD/target/release/claudemesh-broker
LOADGEN=$PWD/target/release/claudemesh-loadgen
PORT=${BENCH_PORT:-7990}
TOKEN=bench-admin-token-0123456789
PG_SERVER=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG_SERVER%/*}
WORK=$(mktemp -d /tmp/cmb-pairs.XXXXXX)
PIDS=()
DB=

stop_cluster() {
  if [ ${#PIDS[@]} -gt 0 ]; then
    kill "${PIDS[@]}" 2>/dev/null || true
    # Started in a subshell, so `wait` cannot see them: the next run
    # needs their ports free.
    for pid in "${PIDS[@]}"; do
      for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    done
  fi
  PIDS=()
  if [ -n "$DB" ]; then
    psql "$PG_SERVER" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
    DB=
  fi
}
trap 'stop_cluster; rm -rf "$WORK"' EXIT

start_cluster() {
  DB="cmb_pairs_$$_$RANDOM"
  psql "$PG_SERVER" -qc "CREATE DATABASE $DB" >/dev/null
  for i in 0 1 2; do
    (
      cd "$WORK"
      env -i PATH="$PATH" HOME="$HOME" \
        BROKER_PORT=$((PORT + i)) BROKER_BIND=127.0.0.1 BROKER_ADMIN_TOKEN="$TOKEN" \
        BROKER_SEND_RATE_PER_MIN=100000000 BROKER_SEND_BURST=100000000 \
        MAX_CONNECTIONS_PER_MESH=20000 BROKER_SHUTDOWN_DRAIN_SECONDS=0 \
        BROKER_LOG_FORMAT=json RUST_LOG=warn DATABASE_URL="$PG_BASE/$DB" \
        "$BROKER" serve >"$WORK/node$i.log" 2>&1 &
      echo $! >"$WORK/pid$i"
    )
    PIDS+=("$(cat "$WORK/pid$i")")
  done
  for i in 0 1 2; do
    for _ in $(seq 1 100); do
      curl -fs "http://127.0.0.1:$((PORT + i))/health" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}

# p50 URLS [FLAGS...]: one run on a fresh cluster, prints its p50 in ms
p50() {
  local urls=$1
  shift
  local args=()
  for u in $urls; do args+=(--url "http://127.0.0.1:$((PORT + u))"); done
  start_cluster
  BROKER_ADMIN_TOKEN=$TOKEN timeout 300 "$LOADGEN" "${args[@]}" --workload rate --peers 99 \
    --rate "$RATE" --duration 10 --json "$@" |
    python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["lost"] == 0, d; print(d["latency_ms"]["p50"])'
  stop_cluster
}

adds=()
for n in $(seq 1 "$PAIRS"); do
  cross=$(p50 "0 1 2" --cross-node)
  one=$(p50 "0")
  add=$(python3 -c "print(f'{$cross - $one:.2f}')")
  adds+=("$add")
  echo "pair $n: cross-node p50 $cross ms, one node p50 $one ms, adds $add ms"
done
python3 -c 'import statistics, sys; a = [float(x) for x in sys.argv[1:]]; print(f"cross-node adds at p50: median {statistics.median(a):.2f} ms (min {min(a):.2f}, max {max(a):.2f}) over {len(a)} pairs")' "${adds[@]}"

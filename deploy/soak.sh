#!/usr/bin/env bash
# Soak: connect/send/disconnect churn against one broker for a bounded
# time, printing the broker's RSS after every round. Each round is a fresh
# load-generator run: a new mesh, new members, PEERS new sessions that
# send and then disconnect. Flat RSS across rounds means nothing grows per
# connection, message or mesh. Not part of CI (it takes minutes).
#
#   bash deploy/soak.sh [memory|postgres] [seconds]   # default: memory 180
set -euo pipefail
cd "$(dirname "$0")/.."

STORE=${1:-memory}
SECONDS_TOTAL=${2:-180}
PEERS=${SOAK_PEERS:-50}
MESSAGES=${SOAK_MESSAGES:-50}
PORT=${SOAK_PORT:-7996}
TOKEN=soak-admin-token-0123456789
PG_SERVER=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
WORK=$(mktemp -d /tmp/cmb-soak.XXXXXX)
DB=

cargo build --release --workspace --bins >&2
cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true
  [ -n "$DB" ] && psql "$PG_SERVER" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

DB_URL=
if [ "$STORE" = postgres ]; then
  DB="cmb_soak_$$"
  psql "$PG_SERVER" -qc "CREATE DATABASE $DB" >/dev/null
  DB_URL="${PG_SERVER%/*}/$DB"
fi
ROOT=$PWD
(
  cd "$WORK"
  env -i PATH="$PATH" HOME="$HOME" BROKER_PORT="$PORT" BROKER_BIND=127.0.0.1 \
    BROKER_ADMIN_TOKEN="$TOKEN" BROKER_SEND_RATE_PER_MIN=100000000 BROKER_SEND_BURST=100000000 \
    BROKER_PRESENCE_GRACE_SECONDS=2 BROKER_SWEEP_INTERVAL_SECONDS=1 \
    BROKER_LOG_FORMAT=json RUST_LOG=warn ${DB_URL:+DATABASE_URL="$DB_URL"} \
    "$ROOT/target/release/claudemesh-broker" serve >broker.log 2>&1 &
  echo $! >pid
)
PID=$(cat "$WORK/pid")
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "round,seconds,rss_kb,delivered,lost"
start=$(date +%s)
round=0
while [ $(( $(date +%s) - start )) -lt "$SECONDS_TOTAL" ]; do
  round=$((round + 1))
  out=$(BROKER_ADMIN_TOKEN=$TOKEN timeout 120 target/release/claudemesh-loadgen \
    --url "http://127.0.0.1:$PORT" --workload dm --peers "$PEERS" --messages "$MESSAGES" --json)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  delivered=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["delivered"])')
  lost=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lost"])')
  echo "$round,$(( $(date +%s) - start )),$rss,$delivered,$lost"
done

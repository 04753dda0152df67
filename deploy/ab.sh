#!/usr/bin/env bash
# Compares broker builds back to back on one workload: each round runs
# every given binary once, in turn, each on a fresh broker and database
# (Postgres), and prints one line per run. Builds drift with the machine;
# only lines of one invocation compare.
#
#   bash deploy/ab.sh 3 /tmp/old/claudemesh-broker target/release/claudemesh-broker
#   AB_ARGS="--workload rate --peers 100 --rate 2000 --duration 10" bash deploy/ab.sh 2 A B
#
# Default workload: dm --peers 100 --messages 1000. Needs Postgres on
# 127.0.0.1:5432 (or DATABASE_URL's server).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: bash deploy/ab.sh ROUNDS BROKER_BINARY..." >&2
  exit 2
fi
ROUNDS=$1
shift
. deploy/bench-lib.sh
trap 'drop_db; rm -rf "$WORK"' EXIT
ulimit -n 65536 2>/dev/null || true
read -r -a ARGS <<<"${AB_ARGS:---workload dm --peers 100 --messages 1000}"

one() {
  BROKER=$1
  new_db
  launch broker "$PORT" "$PG_BASE/$BENCH_DB"
  local pid json
  pid=$(cat "$WORK/broker.pid")
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  json=$(BROKER_ADMIN_TOKEN=$TOKEN timeout 300 "$LOADGEN" --url "http://127.0.0.1:$PORT" \
    "${ARGS[@]}" --broker-pid "$pid" --json)
  kill "$pid"
  wait_gone "$pid"
  drop_db
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print("%.0f msgs/s, lost %d, p50 %.1f ms, p99 %.1f ms" % (d["throughput_msgs_per_s"], d["lost"],
      d["latency_ms"]["p50"], d["latency_ms"]["p99"]))' "$json"
}

for r in $(seq 1 "$ROUNDS"); do
  for b in "$@"; do
    echo "round $r $b: $(one "$b")"
  done
done

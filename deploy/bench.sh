#!/usr/bin/env bash
# Runs the standard benchmark tables against release builds on this machine
# and prints them as Markdown: one broker at a time (memory, then Postgres),
# each run on a fresh broker, then three Postgres-backed nodes on one
# database; the load generator on the same machine. First, Postgres's own
# ceiling (deploy/ceiling.sh), so every row also reads as a ratio to it.
# About fifteen minutes.
#
#   bash deploy/bench.sh            # needs Postgres on 127.0.0.1:5432 (or DATABASE_URL's server)
#
# Every run is bounded (timeout) and the brokers are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

. deploy/bench-lib.sh
. deploy/ceiling.sh
BROKER_PID=

stop_broker() {
  if [ -n "$BROKER_PID" ]; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait_gone "$BROKER_PID"
    BROKER_PID=
  fi
  drop_db
}
trap 'stop_broker; rm -rf "$WORK"' EXIT

# start_broker memory|postgres
start_broker() {
  local db_url=""
  BENCH_DB=
  if [ "$1" = postgres ]; then
    new_db
    db_url="$PG_BASE/$BENCH_DB"
  fi
  launch broker "$PORT" "$db_url"
  BROKER_PID=$(cat "$WORK/broker.pid")
  for _ in $(seq 1 100); do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      echo "broker exited (port $PORT taken?)" >&2
      cat "$WORK/broker.log" >&2
      exit 1
    fi
    curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "broker did not start" >&2
  cat "$WORK/broker.log" >&2
  exit 1
}

peak_rss_mb() {
  awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$BROKER_PID/status"
}

# row STORE ARGS RSS JSON: prints one Markdown row from a loadgen report
row() {
  python3 - "$@" <<'PY'
import json, sys
import os
store, args, rss, doc = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
lat = doc["latency_ms"]
commit, tps = os.environ.get("CEIL_COMMIT_MS"), os.environ.get("CEIL_TPS")
if doc.get("rss_kib_per_connection") is not None:
    extra = f'{doc["rss_kib_per_connection"]:.0f} KiB/connection'
else:
    extra = f'{doc["throughput_msgs_per_s"]:,.0f} msgs/s'
if doc.get("spread_ms"):
    extra += f'; spread p50 {doc["spread_ms"]["p50"]:.1f} / p99 {doc["spread_ms"]["p99"]:.1f} ms'
if doc.get("stalled"):
    extra += f'; {doc["stalled"]} stalled readers, {doc["sent_to_stalled"]} sends to them'
ratio = '–'
if commit and tps and doc.get("rss_kib_per_connection") is None:
    ratio = f'{doc["throughput_msgs_per_s"] / float(tps):.2f}× / {lat["p50"] / float(commit):.1f}×'
print(f'| {store} | `{args}` | {doc["delivered"]}/{doc["delivered"] + doc["lost"]} | {doc["lost"]} | '
      f'{extra} | {lat["p50"]:.1f} / {lat["p99"]:.1f} | {ratio} | {doc["hello_per_s"]:,.0f} | {rss} |')
PY
}

# run STORE ARGS...: one row of the table
run() {
  local store=$1
  shift
  start_broker "$store"
  local json
  json=$(BROKER_ADMIN_TOKEN=$TOKEN timeout 300 "$LOADGEN" --url "http://127.0.0.1:$PORT" "$@" --broker-pid "$BROKER_PID" --json)
  local rss
  rss="$(peak_rss_mb) MB"
  row "$store" "$*" "$rss" "$json"
  stop_broker
}

ulimit -n 65536 2>/dev/null || true
ceiling 10
echo "Postgres ceiling, this run: durable 1 KB insert, 1 client ${CEIL_COMMIT_MS:-?} ms per commit; 8 clients ${CEIL_TPS:-?} inserts/s."
echo "Ratios: throughput to the 8-client rate / p50 to the 1-client commit."
echo
echo "| store | workload | delivered/expected | lost | result | latency p50 / p99 ms | vs ceiling | hellos/s | broker peak RSS |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
run memory --workload dm --peers 100 --messages 1000
run memory --workload broadcast --peers 100 --messages 100
run memory --workload rate --peers 100 --rate 2000 --duration 10
run memory --workload idle --peers 10000 --meshes 100 --hold 3
run postgres --workload idle --peers 10000 --meshes 100 --hold 3 --connect-concurrency 10000
run postgres --workload dm --peers 100 --messages 100
run postgres --workload dm --peers 100 --messages 1000
run postgres --workload broadcast --peers 100 --messages 100
run postgres --workload broadcast --peers 1000 --messages 20
run postgres --workload broadcast --peers 1000 --messages 20 --rate 10
run postgres --workload rate --peers 100 --rate 2000 --duration 10
run postgres --workload rate --peers 100 --rate 2000 --duration 10 --stalled 5

# Three nodes on one database (deploy/bench-lib.sh), peers round-robin over them.
trap 'stop_cluster 2>/dev/null; stop_broker; rm -rf "$WORK"' EXIT
# cluster_run LABEL URLS ARGS...
cluster_run() {
  local label=$1 urls=$2
  shift 2
  start_cluster
  local json args=()
  for u in $urls; do args+=(--url "http://127.0.0.1:$((PORT + u))"); done
  json=$(BROKER_ADMIN_TOKEN=$TOKEN timeout 300 "$LOADGEN" "${args[@]}" "$@" --json)
  local notifies=0 deliveries=0
  for i in 0 1 2; do
    local m
    m=$(curl -fs "http://127.0.0.1:$((PORT + i))/metrics")
    notifies=$((notifies + $(awk '/^broker_notify_sent_total / {print int($2)}' <<<"$m")))
    deliveries=$((deliveries + $(awk '/^broker_deliveries_total / {print int($2)}' <<<"$m")))
  done
  python3 - "$label" "$*" "$notifies" "$deliveries" "$json" <<'PY'
import json, os, sys
label, args, notifies, deliveries, doc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
lat = doc["latency_ms"]
commit, tps = os.environ.get("CEIL_COMMIT_MS"), os.environ.get("CEIL_TPS")
ratio = '–'
# Files move megabytes, not rows: no ratio to an insert rate means anything.
if commit and tps and "upload_mb_per_s" not in doc:
    ratio = f'{doc["throughput_msgs_per_s"] / float(tps):.2f}× / {lat["p50"] / float(commit):.1f}×'

per = f'{notifies / deliveries:.2f}' if deliveries else '–'
dups = f', {doc["duplicates"]} duplicates' if doc.get("duplicates") else ''
rate = f'{doc["throughput_msgs_per_s"]:,.0f} msgs/s'
if "upload_mb_per_s" in doc:
    rate = f'upload {doc["upload_mb_per_s"]:,.0f} MB/s, download {doc["download_mb_per_s"]:,.0f} MB/s'
print(f'| {label} | `{args}` | {rate}, {doc["lost"]} lost{dups} | '
      f'{lat["p50"]:.1f} / {lat["p95"]:.1f} / {lat["p99"]:.1f} | {ratio} | {per} |')
PY
  stop_cluster
}

echo
echo "| 3 nodes | workload | result | latency p50 / p95 / p99 ms | vs ceiling | NOTIFYs per delivery |"
echo "| --- | --- | --- | --- | --- | --- |"
cluster_run "cross-node only" "0 1 2" --workload rate --peers 99 --rate 1000 --duration 10 --cross-node
cluster_run "all on one node" "0" --workload rate --peers 99 --rate 1000 --duration 10
cluster_run "cross-node only" "0 1 2" --workload rate --peers 99 --rate 2000 --duration 10 --cross-node
cluster_run "all on one node" "0" --workload rate --peers 99 --rate 2000 --duration 10
cluster_run "spread" "0 1 2" --workload dm --peers 99 --messages 100

# Shared state and tasks (PROTOCOL-MESH.md §1, §3): set -> state_change at
# a peer on another node; claimers on every node racing over a backlog
# (groups of one per node claim the same tasks; duplicates are double
# claims).
echo
echo "| 3 nodes | workload | result | latency p50 / p95 / p99 ms | vs ceiling | NOTIFYs per delivery |"
echo "| --- | --- | --- | --- | --- | --- |"
cluster_run "state" "0 1 2" --workload state --peers 100 --rate 1000 --duration 10
cluster_run "task claims" "0 1 2" --workload tasks --peers 300 --messages 20

# Time and fan-out (PROTOCOL-MESH.md §12, §14): reminder lateness (push
# minus due time) and stream publish -> subscriber on another node.
echo
echo "| 3 nodes | workload | result | latency p50 / p95 / p99 ms | vs ceiling | NOTIFYs per delivery |"
echo "| --- | --- | --- | --- | --- | --- |"
cluster_run "reminders" "0 1 2" --workload schedule --peers 100 --messages 100 --duration 60 --lead 30
cluster_run "stream" "0 1 2" --workload stream --peers 100 --rate 1000 --duration 10

# Relays and files (PROTOCOL-MESH.md §15, §17): mcp_call round trips with
# every caller and host on different nodes; uploads to each node and
# downloads from the next (latency per upload), on Postgres blobs and, with
# an S3 API server at hand (moto, as tests/run.sh installs it), on S3.
echo
echo "| 3 nodes | workload | result | latency p50 / p95 / p99 ms | vs ceiling | NOTIFYs per delivery |"
echo "| --- | --- | --- | --- | --- | --- |"
cluster_run "mcp_call" "0 1 2" --workload relay --peers 100 --rate 500 --duration 10
cluster_run "files, Postgres" "0 1 2" --workload upload --peers 6 --messages 5 --payload-bytes 10000000
MOTO=${S3_TEST_SERVER:-$PWD/target/s3-server-venv/bin/moto_server}
if [ -x "$MOTO" ]; then
  "$MOTO" -H 127.0.0.1 -p $((PORT + 50)) >/dev/null 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$((PORT + 50))/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs -X PUT "http://127.0.0.1:$((PORT + 50))/bench" >/dev/null
  BENCH_ENV=(BROKER_FILE_STORE=s3 BROKER_S3_ENDPOINT="http://127.0.0.1:$((PORT + 50))" BROKER_S3_BUCKET=bench
    BROKER_S3_REGION=us-east-1 BROKER_S3_ACCESS_KEY=bench BROKER_S3_SECRET_KEY=bench BROKER_S3_PATH_STYLE=true)
  cluster_run "files, S3 (moto)" "0 1 2" --workload upload --peers 6 --messages 5 --payload-bytes 10000000
  BENCH_ENV=()
  kill "$MOTO_PID" 2>/dev/null || true
else
  echo "(no S3 API server at $MOTO: the S3 row is skipped; bash tests/run.sh installs one)"
fi

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
. deploy/bench-lib.sh
trap 'stop_cluster; rm -rf "$WORK"' EXIT

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

# Shared by deploy/bench.sh and deploy/cross-pairs.sh (sourced from the
# repository root): builds the release binaries, then starts and stops a
# three-node cluster on a fresh database.

cargo build --release --workspace --bins >&2
# BENCH_BROKER runs another build of the broker (say, the previous commit's,
# to compare two builds back to back with the same load generator).
BROKER=${BENCH_BROKER:-$PWD/target/release/claudemesh-broker}
# BENCH_DB_PARAMS is appended to the brokers' DATABASE_URL as its query
# (say sslmode=disable: the default, prefer, encrypts whenever the server
# offers TLS, as a local Debian cluster does, and builds before TLS support
# never did).
LOADGEN=$PWD/target/release/claudemesh-loadgen
PORT=${BENCH_PORT:-7990}
TOKEN=bench-admin-token-0123456789
PG_SERVER=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_BASE=${PG_SERVER%/*}
WORK=$(mktemp -d /tmp/cmb-bench.XXXXXX)
BENCH_DB=
CLUSTER_PIDS=()

# wait_gone PID...: the brokers run in a subshell, so `wait` cannot see
# them; the next run needs their ports free.
wait_gone() {
  for pid in "$@"; do
    for _ in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
}

drop_db() {
  if [ -n "$BENCH_DB" ]; then
    psql "$PG_SERVER" -qc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null || true
    BENCH_DB=
  fi
}

new_db() {
  BENCH_DB="cmb_bench_$$_$RANDOM"
  psql "$PG_SERVER" -qc "CREATE DATABASE $BENCH_DB" >/dev/null
}

# launch NAME PORT [DATABASE_URL]: one broker in the background with the
# send budget and connection limits raised; its pid goes in $WORK/NAME.pid
# and its log in $WORK/NAME.log.
launch() {
  local name=$1 port=$2 db_url=${3:-}
  (
    cd "$WORK"
    env -i PATH="$PATH" HOME="$HOME" \
      BROKER_PORT="$port" BROKER_BIND=127.0.0.1 BROKER_ADMIN_TOKEN="$TOKEN" \
      BROKER_SEND_RATE_PER_MIN=100000000 BROKER_SEND_BURST=100000000 BROKER_STREAM_RATE_PER_MIN=100000000 \
      MAX_CONNECTIONS_PER_MESH=20000 BROKER_SHUTDOWN_DRAIN_SECONDS=0 \
      BROKER_MAX_NEW_CONNECTIONS_PER_SECOND=100000 BROKER_MAX_CONNECTIONS_PER_NODE=20000 \
      BROKER_LOG_FORMAT=json RUST_LOG=warn ${db_url:+DATABASE_URL="$db_url${BENCH_DB_PARAMS:+?$BENCH_DB_PARAMS}"} \
      BROKER_MAX_MESH_FILE_BYTES=10737418240 "${BENCH_ENV[@]}" \
      "$BROKER" serve >"$WORK/$name.log" 2>&1 &
    echo $! >"$WORK/$name.pid"
  )
}

# Extra NAME=VALUE settings for the brokers launched next (the S3 rows).
BENCH_ENV=()

# Three nodes on one fresh database, on PORT, PORT+1 and PORT+2.
start_cluster() {
  new_db
  CLUSTER_PIDS=()
  for i in 0 1 2; do
    launch "node$i" $((PORT + i)) "$PG_BASE/$BENCH_DB"
    CLUSTER_PIDS+=("$(cat "$WORK/node$i.pid")")
  done
  for i in 0 1 2; do
    for _ in $(seq 1 100); do
      curl -fs "http://127.0.0.1:$((PORT + i))/health" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}

stop_cluster() {
  if [ ${#CLUSTER_PIDS[@]} -gt 0 ]; then
    kill "${CLUSTER_PIDS[@]}" 2>/dev/null || true
    wait_gone "${CLUSTER_PIDS[@]}"
  fi
  CLUSTER_PIDS=()
  drop_db
}

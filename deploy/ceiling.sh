# Postgres's own ceiling on this machine, measured in the same run as the
# broker's figures so they can be read as ratios (the machine's speed
# drifts 2-3x between days; a ratio to the database next to it does not).
# Sourced by deploy/bench.sh after deploy/bench-lib.sh: defines `ceiling`,
# which sets CEIL_COMMIT_MS (average durable commit of a 1 KB insert, one
# client) and CEIL_TPS (1 KB inserts per second, 8 clients).

pgbench_bin() {
  command -v pgbench 2>/dev/null || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1
}

# ceiling [SECONDS]: both figures on a fresh database of the bench server.
ceiling() {
  local secs=${1:-10} bin out1 out8
  bin=$(pgbench_bin)
  if [ -z "$bin" ]; then
    echo "pgbench not found (Debian: postgresql-client); no ceiling, no ratios" >&2
    CEIL_COMMIT_MS=
    CEIL_TPS=
    return 0
  fi
  new_db
  local url="$PG_BASE/$BENCH_DB"
  psql "$url" -qc "CREATE TABLE ceiling (id bigserial PRIMARY KEY, body text NOT NULL)" >/dev/null
  local script="$WORK/ceiling.sql"
  echo "INSERT INTO ceiling (body) VALUES (repeat('x', 1024));" >"$script"
  out1=$("$bin" -n -c 1 -T "$secs" -f "$script" "$url" 2>&1)
  out8=$("$bin" -n -c 8 -j 2 -T "$secs" -f "$script" "$url" 2>&1)
  CEIL_COMMIT_MS=$(awk '/^latency average/ {print $4}' <<<"$out1")
  CEIL_TPS=$(awk '/^tps/ {printf "%.0f", $3}' <<<"$out8")
  drop_db
  export CEIL_COMMIT_MS CEIL_TPS
}

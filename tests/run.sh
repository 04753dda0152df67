#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL.
#
# Finds a server in this order: $DATABASE_URL if set; a server answering on
# 127.0.0.1:5432; an installed Debian cluster (started here); a throwaway
# cluster made with initdb (as a non-root user when run as root); and, on a
# machine with none of these, PostgreSQL installed with apt first.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[tests/run.sh] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do
    port_open "$1" "$2" && return 0
    sleep 0.5
  done
  return 1
}

pg_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

start_debian_cluster() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 1
  local line ver name
  line=$(pg_lsclusters --no-header 2>/dev/null | head -n 1) || return 1
  [ -n "$line" ] || return 1
  ver=$(echo "$line" | awk '{print $1}')
  name=$(echo "$line" | awk '{print $2}')
  log "starting installed cluster $ver/$name"
  pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || pg_ctlcluster "$ver" "$name" start || return 1
  wait_port 127.0.0.1 5432 || return 1
  # A packaged cluster asks for a password on TCP: give the postgres role
  # one (over the local socket, as the postgres OS user) and use it.
  if [ "$(id -u)" = 0 ] && id -u postgres >/dev/null 2>&1; then
    runuser -u postgres -- psql -q -c "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
    export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
  fi
}

start_throwaway_cluster() {
  local bindir dir port user
  bindir=$(pg_bindir)
  [ -n "$bindir" ] && [ -x "$bindir/initdb" ] || return 1
  port=54329
  dir=$(mktemp -d /tmp/cmb-pg.XXXXXX)
  user=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root.
    user=postgres
    id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home "$user"
    chown "$user" "$dir"
  fi
  log "initdb throwaway cluster in $dir (port $port, user $user)"
  local run=(env)
  [ "$(id -u)" = 0 ] && run=(runuser -u "$user" --)
  "${run[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust >/dev/null
  "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

install_postgres() {
  command -v apt-get >/dev/null 2>&1 || return 1
  log "installing PostgreSQL with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
}

if [ -n "${DATABASE_URL:-}" ]; then
  log "using DATABASE_URL from the environment"
elif port_open 127.0.0.1 5432; then
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
elif start_debian_cluster; then
  [ -n "${DATABASE_URL:-}" ] || export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
elif start_throwaway_cluster; then
  :
elif install_postgres && (start_debian_cluster || start_throwaway_cluster); then
  [ -n "${DATABASE_URL:-}" ] || export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
else
  log "no PostgreSQL could be found, started or installed"
  exit 1
fi

# The S3 blob store is tested against a real S3 API server: moto's, from
# PyPI. Without one the S3 tests say so and skip.
ensure_s3_server() {
  local venv=target/s3-server-venv
  [ -x "$venv/bin/moto_server" ] && return 0
  command -v python3 >/dev/null 2>&1 || return 1
  log "installing the S3 test server (moto, from PyPI) into $venv"
  mkdir -p target
  if python3 -m venv "$venv" && "$venv/bin/pip" install -q 'moto[server]'; then
    return 0
  fi
  rm -rf "$venv"
  return 1
}
ensure_s3_server || log "no S3 test server could be installed: the S3 tests will skip"

log "DATABASE_URL=${DATABASE_URL}"
exec cargo test --workspace --all-targets "$@"

#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests in k8s/ (see
# deploy/validate.py for what is checked). Installs the pinned packages of
# deploy/requirements.txt into a venv under target/ on first use, then
# reuses it: only that first run needs PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "[deploy/validate.sh] ERROR: needs Python 3.11 or newer as \$PYTHON or python3" >&2
  exit 1
fi
# The venv is rebuilt when the requirements or the interpreter change.
stamp=$("$python" -c 'import hashlib, sys
print(hashlib.sha256(open("deploy/requirements.txt", "rb").read() + sys.version.encode()).hexdigest())')

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "[deploy/validate.sh] installing deploy/requirements.txt into $venv" >&2
  rm -rf "$venv"
  mkdir -p target
  "$python" -m venv "$venv"
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      --no-input -r deploy/requirements.txt; then
    rm -rf "$venv"
    echo "[deploy/validate.sh] ERROR: could not install deploy/requirements.txt" \
      "(is PyPI reachable?); the manifests were NOT validated" >&2
    exit 1
  fi
  printf '%s\n' "$stamp" > "$venv/.stamp"
fi

exec "$venv/bin/python" deploy/validate.py "$@"

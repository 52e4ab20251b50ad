#!/usr/bin/env bash
# Create .venv and install lfm-export with its pinned dependencies. Idempotent: a no-op when pyproject.toml
# has not changed since the last install. Sourced by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v java >/dev/null 2>&1; then
  echo "lfm-export needs Java 17 for Spark (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do command -v "$cand" >/dev/null 2>&1 && { PY=$cand; break; }; done
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.lfm-installed
UV_VERSION=0.9.13
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)  # the pins and this recipe
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log=.venv/install.log
  echo "installing lfm-export and its pinned dependencies into .venv (first time: a few minutes; the installer's output: $log)"
  # uv (pinned) fetches and unpacks the wheels in parallel: about 2 min for the 6.6 GB environment on 2 cores,
  # against 5-6 min for pip; pip installs the same pins if uv cannot be had. Both compile the bytecode at
  # install (about 40 s on 2 cores): where Python may not write it (PYTHONDONTWRITEBYTECODE, a read-only
  # install), every process would otherwise compile what it imports anew, about 12 s for GE, Feast and torch, in
  # every `lfm` command and every Spark Python worker. The `dagster` extra (the orchestrator, whose tests CI runs)
  # adds 33 packages, about 110 MB and 10 s.
  if ! { { .venv/bin/python -m pip install "uv==$UV_VERSION" &&
           .venv/bin/uv pip install --python .venv/bin/python --compile-bytecode -e ".[test,dagster]"; } ||
         { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[test,dagster]"; }
       } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "installing the dependencies failed; the whole output is in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

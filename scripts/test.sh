#!/usr/bin/env bash
# The whole test suite: installs .venv if missing and redis-server (Debian package) for the Redis tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server from Debian's packages (the Redis online-store tests start a real one)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi
bash scripts/seaweedfs.sh build >/dev/null  # the S3 tests' server (SeaweedFS), built once per pinned version
# Two test processes, each test file whole in one of them (its module fixtures built once); the longest files
# start first, in the order tests/conftest.py gives (xdist would otherwise start the files with most tests first).
# LFM_TEST_WORKERS=0 runs in this process.
exec .venv/bin/python -m pytest -q -n "${LFM_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"

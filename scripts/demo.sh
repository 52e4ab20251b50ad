#!/usr/bin/env bash
# The main job on the embedded default: installs .venv, then runs `lfm demo` (synthetic data unless
# DATA=<folder in the KuaiRand layout> is set) end to end and prints a summary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
exec .venv/bin/lfm demo ${DATA:+--data "$DATA"} "$@"

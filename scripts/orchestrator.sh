#!/usr/bin/env bash
# The daily chain in Dagster's UI on the demo world: installs .venv (with the `dagster` extra), prepares the demo
# world without running its days (`lfm demo --daily-days 0`: synthetic data ingested, a model, its CR layer;
# skipped when done), then serves the code location `orchestration.definitions` for lfm.yaml, whose `schedule:`
# names the demo's last 3 days, at http://127.0.0.1:3000 (run, backfill, watch, schedule). DAGSTER_HOME keeps runs
# across restarts under data/dagster. Extra arguments go to `dagster dev` (e.g. -p 3001).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
.venv/bin/lfm demo --daily-days 0
export LFM_CONFIG="$PWD/lfm.yaml" DAGSTER_HOME="$PWD/data/dagster"
mkdir -p "$DAGSTER_HOME"
cp orchestration/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
exec .venv/bin/dagster dev -m orchestration.definitions -h 127.0.0.1 "$@"

"""The code location: `dagster dev -m orchestration.definitions`, for the config in `$LFM_CONFIG` (else ./lfm.yaml).

A config without `schedule.first_day` stops the load with a message naming the key.
"""
from orchestration.build import build_definitions

defs = build_definitions()

"""The daily chain in Dagster: one daily-partitioned asset per step group, the quality gate a blocking check.

An optional extra (`pip install -e .[dagster]`) at the top of the package graph: nothing imports it, and it reaches
the platform only through `pipeline` (the same `run_days` the `lfm run-daily` verb calls, one group of steps per
asset) and the day's records (`pipeline.daystate`). `docs/orchestration.md` says why Dagster and how each rule of
the platform maps onto it; `orchestration.definitions` is the code location (`dagster dev -m
orchestration.definitions`).
"""

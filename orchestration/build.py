"""The Definitions of one config: the assets, the job of one day, the schedule, the platform resource.

`orchestration.definitions` is the code location built from `$LFM_CONFIG` (else ./lfm.yaml); the tests build one
per lakehouse.
"""
from __future__ import annotations

import dagster as dg

from lfm.config import ConfigError, load_config
from orchestration.assets import build_assets
from orchestration.resource import LfmPlatform
from orchestration.schedule import build_schedule, daily_partitions

JOB = "lfm_daily"


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    cfg = load_config(config_path)
    s = cfg.schedule
    if s.first_day is None:
        raise ConfigError("schedule.first_day is not set in the config: the orchestrator needs the day the CR chain "
                          "begins (its cold start), e.g. `schedule: {first_day: 2022-04-29, hour: 2}` in lfm.yaml")
    retry = dg.RetryPolicy(max_retries=s.retries, delay=s.retry_delay_s, backoff=dg.Backoff.EXPONENTIAL,
                           jitter=dg.Jitter.PLUS_MINUS)
    partitions = daily_partitions(cfg)
    assets = build_assets(partitions, retry)
    job = dg.define_asset_job(JOB, selection=dg.AssetSelection.assets(*assets), description="one day of the "
                              "chain: ingest, refresh + gate, publish, materialize, the ANN index")
    return dg.Definitions(assets=assets, jobs=[job], schedules=[build_schedule(cfg, partitions, job)],
                          resources={"lfm": LfmPlatform(config_path=config_path)})


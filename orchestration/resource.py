"""The platform as a Dagster resource: the config, read afresh by every run, and the one SparkSession."""
from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from lfm.config import LfmConfig, load_config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class LfmPlatform(dg.ConfigurableResource):
    """`config_path` None: `$LFM_CONFIG`, else `./lfm.yaml`, else the embedded default (`lfm.config.load_config`).

    Each run loads the file again, so a fixed threshold or a new `schedule.source` applies at the next run without
    reloading the code location (the partitions and the schedule's hour are read when it loads)."""

    config_path: str | None = None

    def config(self) -> LfmConfig:
        return load_config(self.config_path)

    def spark(self, cfg: LfmConfig) -> SparkSession:
        """The process's session (started on first use: a step with nothing to do starts no JVM)."""
        from spark_jobs.session import get_spark

        return get_spark(cfg)

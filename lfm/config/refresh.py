"""Daily refresh settings: who gets a UR, CR decay and normalisation, batch sizes, layer-selection probe."""
from __future__ import annotations

from enum import Enum

from pydantic import Field

from lfm.config.schema import Strict


class UserScope(str, Enum):
    all = "all"  # every user of the users table
    active = "active"  # users with events in the trailing `active_window_days`


class CrNormalisation(str, Enum):
    layernorm = "layernorm"  # (x - mean) / sqrt(var + 1e-5) over the vector, no affine parameters (reference code)
    l2 = "l2"
    none = "none"  # the raw decayed sum (its scale grows with a key's activity)


class RefreshSettings(Strict):
    users: UserScope = UserScope.all
    active_window_days: int = Field(7, ge=1)
    tau_hours: float = Field(72.0, gt=0)  # CR decay time constant: weight exp(-dt / tau)
    normalisation: CrNormalisation = CrNormalisation.layernorm
    # Keys whose last event is more than this many days before the day end leave the CR state and exports
    # (their decayed weight is below exp(-ttl*24/tau)); null keeps every key forever.
    state_ttl_days: int | None = Field(None, ge=1)
    arrow_batch_rows: int = Field(10_000, ge=1)
    torch_threads_per_task: int = Field(1, ge=1)  # 2 tasks x 1 thread beat 1 x 2 on 2 cores (docs/domain.md section 7)
    # Partitions of the extraction stages; null = spark.default.parallelism (one task per core is fastest).
    extraction_partitions: int | None = Field(None, ge=1)
    # Sort the day's samples inside each partition before extraction so Arrow batches, and with them the float
    # sums of the CR state, are bit-identical on every rerun (a sort per partition; see docs/refresh_bench.md).
    deterministic: bool = True
    # Layer selection (`lfm select-layer`): a logistic probe on CR(u) as of the previous day end per scenario.
    probe_task: str | None = None  # label column; null = the first of schema.tasks
    probe_min_test_rows: int = Field(200, ge=10)  # scenarios with fewer test rows (or one class) are not scored
    # Paired bootstrap over test rows: the narrowest point within one SE of the best is chosen (0/1: the best).
    probe_bootstrap_rounds: int = Field(200, ge=0)

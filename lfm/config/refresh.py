"""Daily refresh settings: who gets a UR, CR decay and normalisation, batch sizes."""
from __future__ import annotations

from enum import Enum

from pydantic import Field

from lfm.config.schema import Strict


class UserScope(str, Enum):
    all = "all"  # every user of the users table
    active = "active"  # users with events in the trailing `active_window_days`


class CrNormalisation(str, Enum):
    layernorm = "layernorm"  # (x - mean) / std over the vector, no affine parameters (as the reference code)
    l2 = "l2"
    none = "none"


class RefreshSettings(Strict):
    users: UserScope = UserScope.all
    active_window_days: int = Field(7, ge=1)
    tau_hours: float = Field(72.0, gt=0)  # CR decay time constant: weight exp(-dt / tau)
    normalisation: CrNormalisation = CrNormalisation.layernorm
    arrow_batch_rows: int = Field(10_000, ge=1)
    torch_threads_per_task: int = Field(1, ge=1)

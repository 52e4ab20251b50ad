"""Quality-gate thresholds (the validation issue owns these)."""
from __future__ import annotations

from pydantic import Field

from lfm.config.schema import Strict


class QualitySettings(Strict):
    enabled: bool = True

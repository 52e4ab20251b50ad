"""The vector width a table must have for a model version.

The gate must not learn the width from the data it checks (a wholly wrong-width export would look consistent),
so it comes from outside: the caller (refresh knows its model card), else the model registry's card, else
`quality.dims` in config.
"""
from __future__ import annotations

from lfm.config import LfmConfig
from lfm.errors import LfmError
from validation.errors import QualityError


def _from_registry(cfg: LfmConfig, table: str, model_version: str) -> int | None:
    try:
        from models.registry import Registry  # the LFM issue's registry (docs/contracts.md)
    except ImportError:
        return None
    try:
        card = Registry(cfg).card(model_version)
    except (LfmError, KeyError, FileNotFoundError):
        return None
    if table == "ur":
        return card.ur_dim
    if table == "ir":
        return card.ir_dim
    layer = card.selected_cr_layer
    return card.cr_points.get(layer) if layer else None


def expected_dim(cfg: LfmConfig, table: str, model_version: str, given: dict[str, int] | None = None) -> int:
    """Width of `table` vectors for `model_version`: `given`, else the registry card, else `quality.dims`."""
    if given and table in given:
        return int(given[table])
    dim = _from_registry(cfg, table, model_version) or cfg.quality.dims.get(table)
    if not dim:
        raise QualityError(f"cannot tell the expected width of {table} vectors for model {model_version}: "
                           f"register the model (lfm models list) or set quality.dims.{table} in the config")
    return int(dim)

"""A model card -> the `ExportSpec` of its export under a config (pure; no file access).

The one place with the CR layer rule: the layer asked for, else the one `lfm select-layer` recorded for the model,
else the last CR point (the final hidden layer before the heads; cards list points in mixing-tower order). Dims
come from the card, decay and normalisation from `refresh` in the config, the schema hash from the data schema, the
update cadence (a lineage export, or a frozen one) from `updates`.
"""
from __future__ import annotations

import logging

from lfm.config import LfmConfig
from lfm.contract import ExportSpec, schema_hash
from lfm.names import BadInput

log = logging.getLogger(__name__)


def choose_layer(card, cr_layer: str | None) -> str:
    """`cr_layer`, else the recorded selection, else the last CR point."""
    points = list(card.cr_points)
    if cr_layer:
        if cr_layer not in card.cr_points:
            raise BadInput(f"layer {cr_layer!r} is not a CR point of model {card.model_version}; choose one of "
                           f"{points}")
        return cr_layer
    if card.selected_cr_layer:
        return card.selected_cr_layer
    log.warning("model %s has no selected CR layer (run `lfm select-layer`); using the last point %r",
                card.model_version, points[-1])
    return points[-1]


def spec_for(cfg: LfmConfig, card, cr_layer: str | None = None) -> ExportSpec:
    """The export spec of a model card under this config (with `updates.every_days`, `card` is the lineage's base)."""
    layer = choose_layer(card, cr_layer)
    r = cfg.refresh
    return ExportSpec(model_version=card.model_version, cr_layer=layer, ur_dim=int(card.ur_dim),
                      ir_dim=int(card.ir_dim), cr_dim=int(card.cr_points[layer]), tau_hours=float(r.tau_hours),
                      normalisation=r.normalisation.value, state_ttl_days=r.state_ttl_days,
                      schema_hash=schema_hash(cfg.schema), cadence_days=cfg.updates.every_days)

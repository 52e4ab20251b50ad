"""Resolve an export once per run: the model registry's card -> `ExportSpec` + the verified checkpoint folder.

Every step after this receives the spec; none re-reads the registry to rediscover the layer or the dims
(the rule that turns a card into a spec lives in `models.exports`).
"""
from __future__ import annotations

from dataclasses import dataclass

from lfm.config import LfmConfig
from lfm.contract import DayModel, ExportSpec
from lfm.names import check_model_version


@dataclass(frozen=True)
class ResolvedExport:
    spec: ExportSpec
    model_dir: str  # verified (hashes, tensors, data schema) once, here

    def day_model(self, cfg: LfmConfig, ds) -> DayModel:
        """The version that makes day `ds` (`pipeline.lineage.day_model`)."""
        from pipeline.lineage import day_model

        return day_model(cfg, self.spec, self.model_dir, ds)


def resolve_spec(cfg: LfmConfig, model_version: str | None = None, cr_layer: str | None = None) -> ExportSpec:
    """The spec alone, from the model card (no weights read, no torch): enough to tell which export a run means,
    e.g. that a finished day has nothing left to do."""
    from models.exports import spec_for
    from models.registry import Registry

    card = Registry(cfg).resolve(check_model_version(model_version) if model_version else None)
    if cfg.updates.every_days:  # a lineage export is keyed by its base, whichever of its versions was named
        from pipeline.lineage import root_card

        card = root_card(cfg, card)
    return spec_for(cfg, card, cr_layer)


def resolve_export(cfg: LfmConfig, model_version: str | None = None, cr_layer: str | None = None) -> ResolvedExport:
    """The spec of `model_version` (default: the latest registered) and its verified checkpoint folder (of the
    lineage's base for a lineage export: `pipeline.lineage.day_model` gives the version of each day)."""
    from models.registry import Registry

    spec = resolve_spec(cfg, model_version, cr_layer)
    path = Registry(cfg).path(spec.model_version)  # verifies the weights (hashes, tensors-only load) once, here
    return ResolvedExport(spec, str(path))

"""Which exports Feast should know: the specs `lfm register` applies.

By default every export the lakehouse holds a complete refresh of (`refresh_log`): the embedding spaces that
exist. `--model V` adds the export of V under the current config (before its first refresh), and a lakehouse with
no export yet registers every model of the registry that way.
"""
from __future__ import annotations

from lakehouse import candidates
from lfm.config import LfmConfig
from lfm.contract import ExportSpec
from lfm.names import check_model_version


def export_specs(cfg: LfmConfig, models: list[str] | None = None) -> list[ExportSpec]:
    from models.exports import spec_for
    from models.registry import Registry

    if models:
        reg = Registry(cfg)
        return [spec_for(cfg, reg.card(check_model_version(v))) for v in models]
    seen: dict[str, ExportSpec] = {}
    for c in sorted(candidates.latest_per_export(cfg), key=lambda c: c.committed_at):
        seen.setdefault(c.spec.id, c.spec)
    if seen:
        return list(seen.values())
    return [spec_for(cfg, card) for card in Registry(cfg).list()]

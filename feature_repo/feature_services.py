"""One feature service per export (what a trainer pins), plus `lfm_current`, the explicit current one.

`lfm_e<export id>` never changes meaning: it always serves that export's four views (one embedding space).
`lfm_current` is re-pointed by `lfm register --current` (or `feast.current_version`); its tags say which export.
"""
from __future__ import annotations

from feast import FeatureService, FeatureView

from feature_repo.specs import CURRENT_SERVICE, service_name, spec_tags
from lfm.contract import EMBEDDING_TABLES, ExportSpec


def export_service(spec: ExportSpec, views: dict[str, FeatureView]) -> FeatureService:
    return FeatureService(name=service_name(spec.id), features=[views[t] for t in EMBEDDING_TABLES],
                          tags=spec_tags(spec),
                          description=f"LFM UR, IR, CR(user), CR(item) of export {spec.id} (model {spec.model_version})")


def current_service(spec: ExportSpec, views: dict[str, FeatureView]) -> FeatureService:
    return FeatureService(name=CURRENT_SERVICE, features=[views[t] for t in EMBEDDING_TABLES],
                          tags={**spec_tags(spec), "current": "true"},
                          description=f"the current LFM export ({spec.id}, model {spec.model_version})")

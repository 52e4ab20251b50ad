"""One feature service per model version (what a trainer pins), plus `lfm_current`, the explicit current one.

`lfm_v<version>` never changes meaning: it always serves that version's four views. `lfm_current` is re-pointed
by `lfm register --current V` (or `feast.current_version`); its tag `model_version` says which version it is.
"""
from __future__ import annotations

from feast import FeatureService, FeatureView

from feature_repo.specs import CURRENT_SERVICE, TABLES, VersionSpec, service_name


def version_service(spec: VersionSpec, views: dict[str, FeatureView]) -> FeatureService:
    return FeatureService(name=service_name(spec.version), features=[views[t] for t in TABLES],
                          tags={"model_version": spec.version, "cr_layer": spec.cr_layer},
                          description=f"LFM UR, IR, CR(user), CR(item) of model {spec.version}")


def current_service(spec: VersionSpec, views: dict[str, FeatureView]) -> FeatureService:
    return FeatureService(name=CURRENT_SERVICE, features=[views[t] for t in TABLES],
                          tags={"model_version": spec.version, "cr_layer": spec.cr_layer, "current": "true"},
                          description=f"the current LFM model version ({spec.version})")

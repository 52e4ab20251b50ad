"""`lfm register`: apply the Feast definitions of every exported model version (idempotent, additive).

A new model version adds its four views and its feature service beside the old ones; re-registering the same
versions changes nothing; a version whose CR layer selection changed gets its CR views re-pointed (their source
filters rows by layer, so old-layer rows are never served under the new layer). `lfm_current` names the current
version explicitly: `--current V`, else `feast.current_version`, else the one already current, else the newest.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from lfm.config import LfmConfig
from lfm.names import check_model_version

from feature_repo.errors import NothingRegistered, SpecConflict, UnknownModelVersion
from feature_repo.specs import CURRENT_SERVICE, TABLES, VersionSpec

log = logging.getLogger("lfm.feast")


@dataclass
class Registered:
    """What the Feast registry holds: complete versions (all four views) and the current one."""

    specs: dict[str, VersionSpec] = field(default_factory=dict)
    current: str | None = None

    def require(self, version: str | None) -> VersionSpec:
        """The spec of `version` (None = current); refuses an unregistered one with the list of known ones."""
        if not self.specs:
            raise NothingRegistered("no model version is registered in Feast yet: run `lfm register` first")
        if version is None:
            if self.current is None:
                raise NothingRegistered("no current model version: run `lfm register --current VERSION`")
            version = self.current
        check_model_version(version)
        if version not in self.specs:
            raise UnknownModelVersion(f"model version {version} is not registered in Feast; registered: "
                                      f"{sorted(self.specs)} (run `lfm register` after `lfm pretrain`)")
        return self.specs[version]


def registered(store) -> Registered:
    """Read the versions back from the view tags (the registry is the source of truth, not the model registry)."""
    parts: dict[str, dict[str, tuple[int, str]]] = {}
    for fv in store.list_feature_views(allow_cache=False):
        t = fv.tags or {}
        if t.get("model_version") and t.get("table") in TABLES:
            parts.setdefault(t["model_version"], {})[t["table"]] = (int(t["dim"]), t.get("cr_layer", ""))
    out = Registered()
    for version, p in parts.items():
        if set(p) == set(TABLES):
            out.specs[version] = VersionSpec(version=version, ur_dim=p["ur"][0], ir_dim=p["ir"][0],
                                             cr_dim=p["cr_user"][0], cr_layer=p["cr_user"][1])
    try:
        current = store.get_feature_service(CURRENT_SERVICE, allow_cache=False)
        out.current = current.tags.get("model_version")
    except Exception:  # FeatureServiceNotFoundException: nothing current yet
        out.current = None
    return out


@dataclass
class RegisterResult:
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    current: str
    previous_current: str | None
    applied: bool  # False when the registry already matched (nothing written)


def _check_compatible(old: VersionSpec, new: VersionSpec) -> bool:
    """True when the CR layer changed; refuses UR/IR width changes (a content hash cannot change them)."""
    if (old.ur_dim, old.ir_dim) != (new.ur_dim, new.ir_dim):
        raise SpecConflict(f"model {new.version} is registered with UR/IR widths {old.ur_dim}/{old.ir_dim}, "
                           f"now {new.ur_dim}/{new.ir_dim}: a model version's widths cannot change; the model "
                           "registry or the Feast registry is corrupt")
    return (old.cr_layer, old.cr_dim) != (new.cr_layer, new.cr_dim)


def register(cfg: LfmConfig, specs: list[VersionSpec], current: str | None = None, store=None) -> RegisterResult:
    """Apply the definitions of `specs` (oldest first) and point `lfm_current`; returns what changed."""
    from feature_repo.entities import entities as make_entities
    from feature_repo.feature_services import current_service, version_service
    from feature_repo.feature_views import feature_views
    from feature_repo.store import open_store, write_feature_store_yaml

    write_feature_store_yaml(cfg)
    store = store or open_store(cfg)
    have = registered(store)
    added, updated, unchanged = [], [], []
    for spec in specs:
        if spec.version not in have.specs:
            added.append(spec.version)
        elif _check_compatible(have.specs[spec.version], spec):
            updated.append(spec.version)
            log.warning("model %s: CR layer %s -> %s; re-run `lfm materialize` for its days", spec.version,
                        have.specs[spec.version].cr_layer, spec.cr_layer)
        else:
            unchanged.append(spec.version)
    all_specs = {**have.specs, **{s.version: s for s in specs}}
    if not all_specs:
        raise NothingRegistered("nothing to register: the model registry holds no version (run `lfm pretrain`)")
    chosen = current or cfg.feast.current_version or have.current or (specs[-1].version if specs else None)
    if chosen is None or chosen not in all_specs:
        raise UnknownModelVersion(f"cannot make {chosen} current: it is not registered; registered: "
                                  f"{sorted(all_specs)}")
    cur_changed = chosen != have.current or chosen in updated
    if not added and not updated and not cur_changed:
        return RegisterResult(added, updated, unchanged, chosen, have.current, applied=False)
    ents = make_entities(cfg)
    objects: list = list(ents.values())
    for version in added + updated:
        spec = all_specs[version]
        views = feature_views(cfg, spec, ents)
        objects += [*views.values(), version_service(spec, views)]
    if cur_changed:
        spec = all_specs[chosen]
        views = feature_views(cfg, spec, ents)
        objects.append(current_service(spec, views))
    store.apply(objects, partial=True)
    return RegisterResult(added, updated, unchanged, chosen, have.current, applied=True)

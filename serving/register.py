"""`lfm register`: apply the Feast definitions of exports (idempotent, additive).

A new export adds its four views and its feature service beside the others; registering the same exports again
changes nothing — unless what Feast holds no longer matches what the config would write (the lakehouse moved,
the keys' declared type changed, the keys and so the entities were renamed): then the views are re-applied so every
read goes where the config says.
`lfm_current` names the current export explicitly: `current` (an export id or a model version with one export),
else `feast.current_version` (a model version), else the one already current, else the newest given.
With the lakehouse on an object store, Feast's registry is one object on the store that Feast rewrites whole (last
writer wins): `register` reads, decides and applies while holding the registry's lease
(`<lakehouse>/_locks/feast-registry.lease`, `registry_held`), so two drivers registering at once both land.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES, ExportSpec, side_of
from lfm.names import MODEL_VERSION
from lfm.storage import location

from feature_repo.specs import CURRENT_SERVICE, view_name
from serving.errors import NothingRegistered, UnknownModelVersion

log = logging.getLogger("lfm.feast")

REGISTRY_LEASE = "feast-registry.lease"  # under <lakehouse>/_locks, beside the day, export and table leases


class _Unshared:
    """The sqlite registry beside a local lakehouse: its writes are transactions, no lease to check."""

    def check(self) -> None:
        return None


@contextmanager
def registry_held(cfg: LfmConfig, store, run_id: str | None = None, wait_seconds: float = 600.0) -> Iterator:
    """Hold the lease of Feast's registry for the block, then refresh `store`'s copy of the registry from the store;
    yields the fence whose `check()` the writer calls right before it writes the registry.

    Feast's S3 registry store puts the whole registry protobuf with a plain put: two drivers writing at once would
    lose one's changes. Every write of the platform to that registry (`register`, the materialization intervals)
    is made under this lease, based on the registry as it stands once the lease is held. A busy lease is waited
    for (jittered polling, up to `wait_seconds`; a holder that died frees it at its expiry, `storage.lease_seconds`),
    not refused. On a local lakehouse (the sqlite registry) nothing is held."""
    from feature_repo.store import registry_location

    if registry_location(cfg) is None:
        yield _Unshared()
        return
    from lakehouse.leases import holder_text, waiting_for
    from lakehouse.objects import Objects

    objects = Objects(cfg, cfg.location(cfg.lakehouse).child("_locks"))
    holder = holder_text(run_id or f"register-{uuid.uuid4().hex[:12]}")
    with waiting_for(objects, REGISTRY_LEASE, holder, cfg.storage.lease_seconds, wait_seconds,
                     "Feast's registry") as lease:
        store.refresh_registry()  # what others applied before we held the lease
        yield lease


@dataclass
class Registered:
    """What the Feast registry holds: complete exports (all four views) and the current one."""

    specs: dict[str, ExportSpec] = field(default_factory=dict)  # export id -> spec
    current: str | None = None  # export id

    def require(self, ref: str | None) -> ExportSpec:
        """The spec of `ref` (an export id, or a model version with exactly one export; None = current)."""
        if not self.specs:
            raise NothingRegistered("no export is registered in Feast yet: run `lfm register` (or `lfm run-daily`)")
        if ref is None:
            if self.current is None:
                raise NothingRegistered("no current export: run `lfm register --current EXPORT_ID`")
            ref = self.current
        if ref in self.specs:
            return self.specs[ref]
        if MODEL_VERSION.fullmatch(ref or ""):
            of_model = [s for s in self.specs.values() if s.model_version == ref]
            if len(of_model) == 1:
                return of_model[0]
            if len(of_model) > 1:
                raise UnknownModelVersion(f"model {ref} has several registered exports "
                                          f"{sorted(s.id for s in of_model)}: pick one with --feature-service "
                                          "lfm_e<export id>")
        raise UnknownModelVersion(f"{ref!r} is not a registered export or model version; registered exports: "
                                  + ", ".join(f"{s.id} (model {s.model_version})" for s in self.specs.values())
                                  + " (run `lfm register` after `lfm pretrain`)")


def registered(store) -> Registered:
    """Read the exports back from the view tags (the Feast registry is the source of truth here)."""
    parts: dict[str, dict[str, str]] = {}
    for fv in store.list_feature_views(allow_cache=False):
        t = fv.tags or {}
        if t.get("export_spec") and t.get("table") in EMBEDDING_TABLES:
            parts.setdefault(t["export_id"], {})[t["table"]] = t["export_spec"]
    out = Registered()
    for export_id, p in parts.items():
        if set(p) == set(EMBEDDING_TABLES):
            out.specs[export_id] = ExportSpec.from_json(p["ur"])
    try:
        current = store.get_feature_service(CURRENT_SERVICE, allow_cache=False)
        out.current = current.tags.get("export_id")
    except Exception:  # FeatureServiceNotFoundException: nothing current yet
        out.current = None
    return out


@dataclass
class RegisterResult:
    added: list[str]
    updated: list[str]  # re-applied because the registered sources differ from the config's
    unchanged: list[str]
    current: str
    previous_current: str | None
    applied: bool  # False when the registry already matched (nothing written)


def _stale(store, cfg: LfmConfig, spec: ExportSpec) -> bool:
    """True when a registered view of `spec` reads elsewhere than the config would make it read, or is keyed by
    another entity (the configured keys changed)."""
    from feature_repo.data_sources import source_query
    from feature_repo.entities import entities

    ents = entities(cfg)
    for table in EMBEDDING_TABLES:
        fv = store.get_feature_view(view_name(table, spec.id))
        entity = ents[side_of(table)]
        if getattr(fv.batch_source, "query", None) != source_query(cfg, table, spec) \
                or getattr(fv.batch_source, "path", None) != location(cfg.table_path(table)).for_spark() \
                or list(fv.entities) != [entity.name] \
                or [c.name for c in fv.entity_columns] != [entity.join_key]:
            return True
    return False


def register(cfg: LfmConfig, specs: list[ExportSpec], current: str | None = None, store=None,
             run_id: str | None = None) -> RegisterResult:
    """Apply the definitions of `specs` (oldest first) and point `lfm_current`; returns what changed. On an
    object-store lakehouse all of it happens under the registry's lease (`registry_held`; `run_id` names the
    holder)."""
    from feature_repo.store import open_store, write_feature_store_yaml

    write_feature_store_yaml(cfg)
    store = store or open_store(cfg)
    with registry_held(cfg, store, run_id) as fence:
        return _register(cfg, specs, current, store, fence)


def _register(cfg: LfmConfig, specs: list[ExportSpec], current: str | None, store, fence) -> RegisterResult:
    from feature_repo.entities import entities as make_entities
    from feature_repo.feature_services import current_service, export_service
    from feature_repo.feature_views import feature_views

    have = registered(store)
    added, updated, unchanged = [], [], []
    for spec in specs:
        if spec.id not in have.specs:
            added.append(spec.id)
        elif _stale(store, cfg, spec):
            updated.append(spec.id)
            log.warning("export %s: its registered sources or entities differ from the config's (lakehouse moved? keys "
                        "renamed?); re-applied",
                        spec.id)
        else:
            unchanged.append(spec.id)
    stale_others = [s.id for s in have.specs.values() if s.id not in {x.id for x in specs} and _stale(store, cfg, s)]
    updated += stale_others
    all_specs = {**have.specs, **{s.id: s for s in specs}}
    if not all_specs:
        raise NothingRegistered("nothing to register: no export exists yet (run `lfm pretrain`, then `lfm run-daily`)")
    wanted = current or cfg.feast.current_version
    chosen = (Registered(all_specs, None).require(wanted).id if wanted else
              have.current or (specs[-1].id if specs else next(iter(all_specs))))
    cur_changed = chosen != have.current or chosen in updated
    if not added and not updated and not cur_changed:
        return RegisterResult(added, updated, unchanged, chosen, have.current, applied=False)
    ents = make_entities(cfg)
    objects: list = list(ents.values())
    for export_id in added + updated:
        spec = all_specs[export_id]
        views = feature_views(cfg, spec, ents)
        objects += [*views.values(), export_service(spec, views)]
    if cur_changed:
        spec = all_specs[chosen]
        objects.append(current_service(spec, feature_views(cfg, spec, ents)))
    fence.check()  # the lease is still ours: no other driver wrote the registry since we read it
    store.apply(objects, partial=True)
    return RegisterResult(added, updated, unchanged, chosen, have.current, applied=True)

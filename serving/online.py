"""Online lookups: Feast's `get_online_features` with export checks, and `OnlineReader`, the fast path.

Both read the same online store. `get_online_features` is Feast's API (a feature service or a list of
`view:feature` refs) after refusing unregistered exports and requests that mix two exports (two embedding spaces).
`OnlineReader` serves the ranking request shape (1 user + N items, all four views of one export) in one store round
trip and decodes vectors straight into numpy; Feast's generic path builds and converts one protobuf per value,
which is what keeps it 2.5-3.4x above the raw store read (docs/serving_bench.md). Unknown ids give missing rows
(None / NaN with `found` False), never zeros.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lfm.config import KeyType, LfmConfig
from lfm.names import BadInput

from lfm.contract import EMBEDDING_TABLES, ITEM_TABLES, USER_TABLES, ExportSpec, side_of, snapshot_day

from feature_repo.specs import CURRENT_SERVICE, service_name, view_name
from serving import whole
from serving.errors import MixedModelVersions, ServingError, UnknownModelVersion
from serving.online_io import reaching_online


@dataclass
class OnlineVectors:
    """Vectors of one entity side: per table a (n, dim) float32 matrix with NaN rows where `found` is False."""

    ids: list
    vectors: dict[str, np.ndarray]
    found: dict[str, np.ndarray]

    def get(self, table: str, i: int) -> np.ndarray | None:
        return self.vectors[table][i] if self.found[table][i] else None

    def to_dict(self) -> dict[str, list]:
        out: dict[str, list] = {"id": list(self.ids)}
        for t, m in self.vectors.items():
            out[t] = [m[i].tolist() if self.found[t][i] else None for i in range(len(self.ids))]
        return out


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def is_int64(value) -> bool:
    """An id the int64 key type can hold (bools are not ids)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX


def int64_refusal(key: str, wrong: Sequence) -> str:
    """The message for ids an int64 key cannot hold (text, floats, bools, beyond 64 bits)."""
    return (f"entity key {key!r} takes integer ids within int64 (its column is declared an integer in `sources`), got "
            f"{list(wrong)[:3]!r}; send integers, e.g. {{\"{key}\": [42]}}")


def decode_column(values: Sequence[bytes | None], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored value bytes -> ((n, dim) float32 with NaN rows for missing, found mask); bulk when widths agree."""
    from serving.codec import decode_vector, float_list_prefix

    n = len(values)
    out = np.full((n, dim), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    prefix = float_list_prefix(dim)
    width = len(prefix) + 4 * dim
    present = [i for i, v in enumerate(values) if v]
    if present and all(len(values[i]) == width for i in present):
        blob = np.frombuffer(b"".join(values[i] for i in present), dtype=np.uint8).reshape(len(present), width)
        if (blob[:, : len(prefix)] == np.frombuffer(prefix, dtype=np.uint8)).all():
            out[present] = blob[:, len(prefix):].copy().view("<f4")
            found[present] = True
            return out, found
    for i in present:
        v = decode_vector(values[i], dim)
        if v is not None:
            if len(v) != dim:
                raise ServingError(f"the online store holds a {len(v)}-d vector where {dim}-d is registered: "
                                   "re-run `lfm materialize` after `lfm register`")
            out[i], found[i] = v, True
    return out, found


class OnlineReader:
    """Lookups of one registered model version (None = the current one), or of `spec` as the caller read it from
    the registry (no registry read here)."""

    def __init__(self, cfg: LfmConfig, version: str | None = None, store=None,
                 spec: ExportSpec | None = None) -> None:
        from serving.online_io import open_online
        from serving.register import registered
        from feature_repo.store import open_store

        self.spec: ExportSpec = spec or registered(store or open_store(cfg)).require(version)
        self.cfg = cfg
        self.int64 = {cfg.schema.user_key: cfg.key_type("user") == KeyType.int64,
                      cfg.schema.item_key: cfg.key_type("item") == KeyType.int64}
        self.backend = open_online(cfg)
        self.refs = {t: (view_name(t, self.spec.id), t) for t in EMBEDDING_TABLES}

    def _keys(self, join_key: str, ids: Sequence) -> list[bytes]:
        from serving.codec import entity_keys

        int64 = self.int64[join_key]
        if int64:
            bad = [i for i in ids if not is_int64(i)]
            if bad:
                raise BadInput(int64_refusal(join_key, bad))
        return entity_keys(join_key, list(ids), int64)

    def _groups(self, user_ids, item_ids, user_tables, item_tables):
        s = self.cfg.schema
        groups, sides = [], []
        if user_ids is not None:
            groups.append((self._keys(s.user_key, user_ids), [self.refs[t] for t in user_tables]))
            sides.append((list(user_ids), tuple(user_tables)))
        if item_ids is not None:
            groups.append((self._keys(s.item_key, item_ids), [self.refs[t] for t in item_tables]))
            sides.append((list(item_ids), tuple(item_tables)))
        return groups, sides

    def read_raw(self, user_ids=None, item_ids=None, user_tables=USER_TABLES, item_tables=ITEM_TABLES):
        """The stored bytes of a request, undecoded (the benchmark's raw read of the same bytes)."""
        groups, _ = self._groups(user_ids, item_ids, user_tables, item_tables)
        return self.backend.read(groups)

    def lookup(self, user_ids=None, item_ids=None, user_tables: Sequence[str] = USER_TABLES,
               item_tables: Sequence[str] = ITEM_TABLES) -> list[OnlineVectors]:
        """Users' and/or items' vectors in one round trip; one `OnlineVectors` per side asked for."""
        for t in (*user_tables, *item_tables):
            if t not in EMBEDDING_TABLES:
                raise BadInput(f"unknown table {t!r}: use {list(EMBEDDING_TABLES)}")
        groups, sides = self._groups(user_ids, item_ids, user_tables, item_tables)
        with reaching_online(self.cfg):
            raw = self.backend.read(groups)
        out = []
        for (ids, tables), per_view in zip(sides, raw):
            vecs, found = {}, {}
            for t, values in zip(tables, per_view):
                vecs[t], found[t] = decode_column(values, self.spec.dim(t))
            out.append(OnlineVectors(ids, vecs, found))
        return out

    def user_vectors(self, user_ids: Sequence, tables: Sequence[str] = USER_TABLES) -> OnlineVectors:
        bad = [t for t in tables if t not in USER_TABLES]
        if bad:
            raise BadInput(f"{bad} are not user tables; use {list(USER_TABLES)}")
        return self.lookup(user_ids=user_ids, user_tables=tables)[0]

    def item_vectors(self, item_ids: Sequence, tables: Sequence[str] = ITEM_TABLES) -> OnlineVectors:
        bad = [t for t in tables if t not in ITEM_TABLES]
        if bad:
            raise BadInput(f"{bad} are not item tables; use {list(ITEM_TABLES)}")
        return self.lookup(item_ids=item_ids, item_tables=tables)[0]

    def request(self, user_id, item_ids: Sequence) -> tuple[OnlineVectors, OnlineVectors]:
        """The ranking request: one user's UR and CR(u) plus N items' IR and CR(i), one round trip."""
        users, items = self.lookup(user_ids=[user_id], item_ids=item_ids)
        return users, items

    def close(self) -> None:
        self.backend.close()


# --- Feast's own API, with the version rules --------------------------------------------------------------


def version_of_refs(store, refs: Sequence[str]) -> str:
    """The one export `view:feature` refs belong to; refuses unknown views and mixed exports."""
    by_view = {fv.name: fv for fv in store.list_feature_views(allow_cache=True)}
    versions: dict[str, list[str]] = {}
    for ref in refs:
        view, sep, feature = str(ref).partition(":")
        fv = by_view.get(view) if sep else None
        if fv is None or feature not in {f.name for f in fv.features}:
            raise UnknownModelVersion(f"feature {ref!r} is not registered (refs look like "
                                      f"'{view_name('ur', '0' * 16)}:ur', the view's name and its one feature, the "
                                      "table; run `lfm register`, see `feast feature-views list`)")
        versions.setdefault(fv.tags.get("export_id", "?"), []).append(str(ref))
    if len(versions) > 1:
        raise MixedModelVersions(f"one request mixes exports {sorted(versions)}: their vectors live in different "
                                 "embedding spaces; ask for one export's features (or its feature service "
                                 "lfm_e<export id>)")
    if not versions:
        raise BadInput("no features requested")
    return next(iter(versions))


def resolve_service(store, service: str | None = None, version: str | None = None):
    """A feature service by name, or the export's `lfm_e<id>` (`version`: an export id or a model version with one
    export), or `lfm_current`."""
    from feast.errors import FeatureServiceNotFoundException

    from serving.register import registered

    if service is None:
        name = service_name(registered(store).require(version).id) if version else CURRENT_SERVICE
    else:
        name = service
    try:
        return store.get_feature_service(name, allow_cache=True)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        raise UnknownModelVersion(f"feature service {name!r} is not registered; registered: {known}") from None


def get_online_features(cfg: LfmConfig, entity_rows: list[dict] | dict[str, list],
                        features: Sequence[str] | None = None, version: str | None = None,
                        service: str | None = None, store=None, event_timestamps: bool = False) -> dict[str, list]:
    """Feast `get_online_features` (refs, a service, or the version's service); nulls for unknown ids. Each
    entity's views come from one state of the store (`serving.whole`), even while a materialize commits. The
    request is checked by `serving.whole.plan`, as the HTTP server checks it. `event_timestamps` adds Feast's
    `<feature>__ts` columns (epoch seconds of each value's snapshot)."""
    from serving.register import registered
    from feature_repo.store import open_store

    store = store or open_store(cfg)
    if features:
        v = version_of_refs(store, features)
        if version and registered(store).require(version).id != v:
            raise MixedModelVersions(f"features of export {v} requested for {version}")
        target = list(features)
    else:
        target = resolve_service(store, service, version)
    asked = whole.plan(cfg, store, views_of(target), whole.columns(entity_rows))
    reader = OnlineReader(cfg, spec=asked.spec)
    try:
        return whole.read_whole(asked, lambda: store.get_online_features(features=target, entity_rows=entity_rows)
                                .to_dict(include_event_timestamps=event_timestamps),
                                lambda: whole.snapshot(asked, reader))
    finally:
        reader.close()


def views_of(target) -> list[str]:
    """The feature view names a request reads: a feature service's projections, or the views of `view:feature`
    refs (Feast's reference form)."""
    if isinstance(target, list):
        return list(dict.fromkeys(str(ref).partition(":")[0] for ref in target))
    return [p.name for p in target.feature_view_projections]


# --- one entity's vectors: `lfm lookup` ------------------------------------------------------------------------

SIDE_TABLES = {"user": USER_TABLES, "item": ITEM_TABLES}


def parse_id(cfg: LfmConfig, side: str, text: str):
    """An id given as text (the CLI) in its key's type: an integer where the key is declared an integer (text that
    is not one is refused naming the key), else the text itself."""
    if cfg.key_type(side) == KeyType.string:
        return text
    key = cfg.schema.user_key if side == "user" else cfg.schema.item_key
    value = int(text) if re.fullmatch(r"-?[0-9]+", text.strip()) else text
    if not is_int64(value):
        raise BadInput(int64_refusal(key, [text]))
    return value


@dataclass(frozen=True)
class Looked:
    """One entity's vectors as served online, and where they come from: the export and each snapshot's day."""

    side: str  # 'user' | 'item'
    id: object
    spec: ExportSpec
    vectors: dict[str, np.ndarray | None]  # table -> vector, None where the id has none online
    days: dict[str, dt.date | None]  # table -> the released day the vector is the snapshot of

    def lines(self, head: int = 5) -> list[str]:
        """What `lfm lookup` prints: the export, the release day(s), then the first numbers of each vector."""
        days = sorted({str(d) for d in self.days.values() if d is not None})
        out = [f"{self.side} {self.id!r}: export {self.spec.id} (model {self.spec.model_version}, CR layer "
               f"{self.spec.cr_layer}), " + (f"release of {', '.join(days)}" if days else "not online")]
        for table, vec in self.vectors.items():
            if vec is None:
                out.append(f"  {table:<8} not online")
            else:
                numbers = ", ".join(f"{x:+.4f}" for x in vec[:head])
                out.append(f"  {table:<8} {len(vec):>4}-d [{numbers}{', ...' if len(vec) > head else ''}]")
        return out


def lookup(cfg: LfmConfig, side: str, entity_id, version: str | None = None, store=None) -> Looked:
    """One user's (UR, CR(u)) or one item's (IR, CR(i)) online vectors, read as the HTTP server reads them (Feast's
    reader behind `serving.whole`'s checks); a side's views need that side's id alone."""
    from serving.register import registered
    from feature_repo.store import open_store

    store = store or open_store(cfg)
    spec = registered(store).require(version)
    tables = SIDE_TABLES[side]
    refs = [f"{view_name(t, spec.id)}:{t}" for t in tables]
    key = cfg.schema.user_key if side_of(tables[0]) == "user" else cfg.schema.item_key
    got = get_online_features(cfg, {key: [entity_id]}, features=refs, store=store, event_timestamps=True)
    vectors, days = {}, {}
    for t in tables:
        value, seconds = got[t][0], got[f"{t}__ts"][0]
        vectors[t] = None if value is None else np.asarray(value, dtype=np.float32)
        days[t] = None if value is None or not seconds else snapshot_day(
            dt.datetime.fromtimestamp(seconds, dt.timezone.utc), cfg.schema.timezone)
    return Looked(side, entity_id, spec, vectors, days)

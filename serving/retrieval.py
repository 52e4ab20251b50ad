"""Standalone retrieval (model-level transfer in serving): top-K items for a user vector over a day's released IR.

`ItemIndex` is a FAISS index (inner product) over one day's item vectors of one export: three files (the index,
the item ids, `meta.json`) in the day's folder of `index_home`: `<repo_path>/data/ann/<export id>/<ds>/` beside a
local lakehouse, `<lakehouse>/_serving/ann/<export id>/<ds>/` when the lakehouse is on an object store (where
`lfm retrieve` on any machine reads it into memory). `lfm materialize` builds it from the released IR it loads,
and its meta names the release (IR version, refresh run). `lfm retrieve` uses the newest index whose release is
still current: an index of a day since withdrawn (rewritten) or re-released at another version is never used.
`Retriever(index, encoder).retrieve(user_vector, k)` is the serving API: the encoder maps a user vector into the
item space: the identity on UR (needs ur_dim == ir_dim), or the retrieval two-tower's learned projection of UR or
CR(u) (any object with `source` and `encode`), which `lfm retrieve` uses by default where one was saved for the
export's model (`--projection FILE` picks one, `--raw` forces the identity).
"""
from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from lakehouse.artifacts import Artifacts
from lakehouse.objects import Objects
from lfm.config import LfmConfig
from lfm.config.serving import IndexKind, RetrievalSettings
from lfm.names import parse_ds
from lfm.storage import location

from serving.errors import NoIndex, ServingError
from serving.receipts import serving_files, serving_home

INDEX, ITEM_IDS, MARKER = "index.faiss", "item_ids.npy", "meta.json"  # the marker is written last


class UserEncoder(Protocol):
    """Maps user vectors into the item space (a learned projection, or the identity)."""

    source: str  # the online user view that feeds it: "ur" or "cr_user"

    def encode(self, vectors: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class IdentityEncoder:
    """UR used as is: valid only when the LFM's user and item towers end in the same width."""

    source: str = "ur"

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32)


class ItemIndex:
    """FAISS index over (item_ids, vectors) scored by inner product; `exact` keeps a flat index for recall.

    HNSW graphs built on inner product navigate poorly (measured here: recall@50 ~0.95 plateau on clustered
    vectors), so `hnsw` uses the standard MIPS-to-L2 reduction: items get one extra coordinate
    sqrt(M^2 - |x|^2) (M = the largest item norm), queries a 0, and the L2 nearest neighbours are then exactly
    the top inner products; scores are mapped back to inner products.
    """

    def __init__(self, index, item_ids: np.ndarray, dim: int, kind: str, meta: dict | None = None) -> None:
        ids = np.asarray(item_ids)
        ids = ids.astype(str) if ids.dtype == object else ids  # string keys as fixed-width text: saved without pickle
        self.index, self.item_ids, self.dim, self.kind = index, ids, dim, kind
        self.meta = meta or {}
        self.max_norm = float(self.meta.get("max_norm", 0.0))
        self._exact = None
        self._vectors: np.ndarray | None = None

    @classmethod
    def build(cls, item_ids, vectors: np.ndarray, settings: RetrievalSettings | None = None,
              meta: dict | None = None) -> "ItemIndex":
        import faiss

        s = settings or RetrievalSettings()
        faiss.omp_set_num_threads(s.threads)
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(item_ids) or len(x) == 0:
            raise NoIndex(f"cannot index {len(item_ids)} item ids with vectors of shape {x.shape}")
        if not np.isfinite(x).all():
            raise NoIndex("item vectors contain NaN/inf; the quality gate should have stopped this day")
        n, d = x.shape
        meta = dict(meta or {})
        if s.index == IndexKind.flat:
            index = faiss.IndexFlatIP(d)
            index.add(x)
        elif s.index == IndexKind.hnsw:
            norms = np.linalg.norm(x, axis=1)
            m = float(norms.max())
            meta["max_norm"] = m
            aug = np.hstack([x, np.sqrt(np.maximum(m * m - norms * norms, 0.0))[:, None]]).astype(np.float32)
            index = faiss.IndexHNSWFlat(d + 1, s.hnsw_m)
            index.hnsw.efConstruction = s.hnsw_ef_construction
            index.hnsw.efSearch = s.hnsw_ef_search
            index.add(aug)
        else:
            nlist = s.ivf_nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
            index.nprobe = min(s.ivf_nprobe, nlist)
            index.add(x)
        out = cls(index, np.asarray(item_ids), d, s.index.value, meta)
        out._vectors = x
        return out

    def __len__(self) -> int:
        return len(self.item_ids)

    def _check(self, queries: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ServingError(f"query vectors have width {q.shape[1]}, the item index {self.dim}: a user vector "
                               "of another width needs a learned projection (see Retriever's encoder)")
        if not np.isfinite(q).all():
            raise ServingError("query vectors contain NaN/inf (a missing user vector?): nothing to retrieve")
        return q

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, scores), each (n, k); ids are -1 / scores -inf where fewer than k items exist."""
        q = self._check(queries)
        k = int(k)
        if k < 1:
            raise ServingError(f"k must be >= 1, got {k}")
        if self.kind == IndexKind.hnsw.value:
            aug = np.hstack([q, np.zeros((len(q), 1), dtype=np.float32)])
            dist, idx = self.index.search(aug, k)
            # |q' - x'|^2 = |q|^2 + M^2 - 2 q.x  ->  q.x
            scores = ((q * q).sum(axis=1, keepdims=True) + self.max_norm ** 2 - dist) / 2
            scores[idx < 0] = -np.inf
            return self._ids(idx), scores.astype(np.float32)
        scores, idx = self.index.search(q, k)
        return self._ids(idx), scores

    def exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (flat inner product over the same vectors): the reference for recall."""
        import faiss

        if self._exact is None:
            self._exact = faiss.IndexFlatIP(self.dim)
            self._exact.add(self.vectors())
        scores, idx = self._exact.search(self._check(queries), int(k))
        return self._ids(idx), scores

    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            if self.kind == IndexKind.ivf.value:
                self.index.make_direct_map()
            v = self.index.reconstruct_n(0, self.index.ntotal)
            self._vectors = np.ascontiguousarray(v[:, : self.dim], dtype=np.float32)  # drop the hnsw extra dim
        return self._vectors

    def _ids(self, idx: np.ndarray) -> np.ndarray:
        out = np.full(idx.shape, -1, dtype=self.item_ids.dtype if self.item_ids.dtype.kind in "iu" else object)
        ok = idx >= 0
        out[ok] = self.item_ids[idx[ok]]
        return out

    def files(self) -> dict[str, bytes]:
        """The index as the named files of its folder (`MARKER` last)."""
        import faiss

        ids = io.BytesIO()
        np.save(ids, self.item_ids, allow_pickle=False)
        meta = {**self.meta, "dim": self.dim, "kind": self.kind, "items": len(self)}
        return {INDEX: faiss.serialize_index(self.index).tobytes(), ITEM_IDS: ids.getvalue(),
                MARKER: json.dumps(meta, sort_keys=True).encode()}

    def save(self, folder: Path) -> Path:
        """Write into a staging folder, then swap it in: a crash never leaves a half-written index behind."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        for name, data in self.files().items():
            (staging / name).write_bytes(data)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            folder.rename(old)
            staging.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(folder)
        return folder

    @classmethod
    def load(cls, folder: Path | Artifacts, settings: RetrievalSettings | None = None) -> "ItemIndex":
        """The index of a folder on disk (a `Path`) or of `Artifacts` (any store), read into memory; a folder
        without its marker (a writer killed part-way) holds no index."""
        import faiss

        files = _as_files(folder)
        meta = json.loads(_read(files, MARKER))
        index = faiss.deserialize_index(np.frombuffer(_read(files, INDEX), dtype=np.uint8))
        s = settings or RetrievalSettings()
        faiss.omp_set_num_threads(s.threads)
        if meta["kind"] == IndexKind.hnsw.value:
            index.hnsw.efSearch = s.hnsw_ef_search
        elif meta["kind"] == IndexKind.ivf.value:
            index.nprobe = s.ivf_nprobe
        ids = np.load(io.BytesIO(_read(files, ITEM_IDS)), allow_pickle=False)
        return cls(index, ids, int(meta["dim"]), meta["kind"], meta)


def _as_files(folder: Path | Artifacts) -> Artifacts:
    return folder if isinstance(folder, Artifacts) else Artifacts.at(location(str(folder)))


def _read(files: Artifacts, name: str) -> bytes:
    data = files.read(name)
    if data is None:
        raise NoIndex(f"no ANN index in {files.uri()} (no {name})")
    return data


def recall_at_k(index: ItemIndex, queries: np.ndarray, k: int) -> float:
    """Mean overlap of the ANN top-k with the exact top-k (recall@k against exact search)."""
    approx, _ = index.search(queries, k)
    exact, _ = index.exact(queries, k)
    hits = [len(set(a[a != -1].tolist()) & set(e[e != -1].tolist())) / max(1, int((e != -1).sum()))
            for a, e in zip(approx, exact)]
    return float(np.mean(hits))


def measure(index: ItemIndex, queries: np.ndarray, k: int) -> dict:
    """recall@k and single-query QPS (one query per call, as a serving request would)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    index.search(q[:1], k)  # warm
    t0 = time.perf_counter()
    for row in q:
        index.search(row[None, :], k)
    seconds = time.perf_counter() - t0
    return {"recall": recall_at_k(index, q, k), "qps": len(q) / seconds, "queries": len(q), "k": k,
            "items": len(index), "kind": index.kind}


# --- per export and day: beside the Feast repo, or on the lakehouse's object store ----------------------------


def index_home(cfg: LfmConfig, export_id: str) -> Artifacts:
    """The folder of the export's day indexes (see `serving.receipts.serving_home`)."""
    return serving_files(cfg, "ann", export_id)


def index_dir(cfg: LfmConfig, export_id: str, ds: dt.date | str) -> Path:
    """The day's index folder of a local lakehouse (an object-store lakehouse has none on disk)."""
    return serving_home(cfg, "ann", export_id).path() / parse_ds(ds).isoformat()


def save_index(cfg: LfmConfig, export_id: str, ds: dt.date | str, index: ItemIndex) -> None:
    """Make `index` the day's index. On disk the folder is swapped in whole (`ItemIndex.save`); on an object store
    the files are put and the marker last, create-only (`Artifacts.publish`), after the marker of another index of
    the day (another release, other settings) is deleted: a writer killed part-way leaves no index that counts."""
    home, day = index_home(cfg, export_id), parse_ds(ds).isoformat()
    if home.where.local:
        index.save(home.where.path() / day)
        return
    files = index.files()
    held = home.child(day).read(MARKER)
    if held == files[MARKER]:
        return  # this very index (same release, same settings) is there
    if held is not None:
        drop_index(cfg, export_id, day)
    home.publish(day, files, MARKER)


def drop_index(cfg: LfmConfig, export_id: str, ds: dt.date | str) -> None:
    """Remove the day's index (a withdrawn release's); on an object store the marker goes first, so what a drop
    killed part-way leaves is not an index."""
    home, day = serving_home(cfg, "ann", export_id), parse_ds(ds).isoformat()
    if home.local:
        shutil.rmtree(home.path() / day, ignore_errors=True)
        return
    objects = Objects(cfg, home.child(day))
    for name in (MARKER, INDEX, ITEM_IDS):
        objects.delete(name)


def pick_index(root: Path | Artifacts, current: dict[str, tuple[int, str]],
               ds: dt.date | str | None = None) -> Path | Artifacts | None:
    """The folder (of the kind `root` is) of the newest day (up to `ds`) whose index was built from the day's
    current release.

    `current`: day (ISO) -> (IR version, refresh run) of every day currently released.
    """
    files = _as_files(root)
    last = parse_ds(ds).isoformat() if ds is not None else None
    for day in sorted(files.folders(MARKER), reverse=True):
        if day not in current or (last is not None and day > last):
            continue
        raw = files.child(day).read(MARKER)
        meta = json.loads(raw) if raw is not None else {}
        if (meta.get("ir_version"), meta.get("release_run_id")) == current[day]:
            return root / day if isinstance(root, Path) else files.child(day)
    return None


def load_index(cfg: LfmConfig, export_id: str, ds: dt.date | str | None = None) -> ItemIndex:
    """The index of the newest released day (up to `ds`) whose index was built from that very release."""
    from lakehouse import releases

    current = {d.isoformat(): (r.table_versions.get("ir"), r.run_id)
               for d, r in releases.released(cfg, export_id).items()}
    folder = pick_index(index_home(cfg, export_id), current, ds)
    if folder is None:
        raise NoIndex(f"no ANN index of a released day for export {export_id}"
                      + (f" up to {parse_ds(ds)}" if ds else "")
                      + ": run `lfm materialize --ds D` (it indexes the day's released IR)")
    return ItemIndex.load(folder, cfg.feast.retrieval)


class Retriever:
    """`retrieve(user_vector, k)`: the serving API of the standalone retrieval channel."""

    def __init__(self, index: ItemIndex, encoder: UserEncoder | None = None) -> None:
        self.index, self.encoder = index, encoder or IdentityEncoder()

    def retrieve(self, user_vector: np.ndarray, k: int) -> list[tuple[object, float]]:
        if user_vector is None:
            raise ServingError("no user vector (unknown user, or not materialized): nothing to retrieve")
        q = self.encoder.encode(np.asarray(user_vector, dtype=np.float32)[None, :])
        ids, scores = self.index.search(q, k)
        return [(i.item() if hasattr(i, "item") else i, float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]


def retrieve_for_user(cfg: LfmConfig, user_id, k: int, version: str | None = None, ds: str | None = None,
                      encoder: UserEncoder | None = None) -> list[tuple[object, float]]:
    """`lfm retrieve`: the user's online vector (UR, or the encoder's source view) -> top-k items."""
    from serving.online import OnlineReader

    enc = encoder or IdentityEncoder()
    reader = OnlineReader(cfg, version)
    try:
        vec = reader.user_vectors([user_id], tables=(enc.source,))
    finally:
        reader.close()
    v = vec.get(enc.source, 0)
    if v is None:
        raise ServingError(f"user {user_id} has no {enc.source} vector online for export {reader.spec.id} "
                           "(unknown user, or its day was not materialized)")
    return Retriever(load_index(cfg, reader.spec.id, ds), enc).retrieve(v, k)

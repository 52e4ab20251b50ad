"""Extraction of UR / IR / CR from a frozen LFM over Arrow record batches, in the driver or a Spark worker.

`Extractor` only holds a path or object-store URI, the store's non-secret options and settings, so it pickles into
Spark closures and an executor that shares no disk with the driver reads the checkpoint from the store itself
(credentials from its own environment); the verified model is loaded lazily once per process (a per-process cache
keyed by folder and pid, so a forked child never uses a parent's half-initialised state) and reused by every task
that process runs. Torch's thread count is set on every call, because Spark reuses Python workers and a previous
task may have changed it.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import torch

from lakehouse.artifacts import without_secrets
from lfm.config import DataSchema
from lfm.config.model import EmbeddingVariant
from lfm.names import BadInput
from lfm.storage import location
from models.encoders import require_columns
from models.registry import Checkpoint, ModelCard, check_schema, load_checkpoint

_CACHE: dict[tuple[str, int], Checkpoint] = {}
_LOCK = threading.Lock()
_MIN_ROWS = 4  # smallest matmul height computed as is (see Extractor._run)

Batch = pa.RecordBatch | pa.Table


def _checkpoint(model_dir: str, schema: DataSchema | None, storage: Mapping[str, str]) -> Checkpoint:
    key = (model_dir, os.getpid())
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_checkpoint(model_dir, storage=storage)
        ck = _CACHE[key]
    if schema is not None:  # checked per call: the cache is shared by extractors with and without a schema
        check_schema(ck.card, schema)
    return ck


class Extractor:
    """UR per user, IR per item, CR at a named point per sample; float32 arrays, deterministic, no autograd."""

    def __init__(self, model_dir: str | os.PathLike, threads: int = 1, batch_rows: int = 8192,
                 schema: DataSchema | None = None, storage: Mapping[str, str] | None = None) -> None:
        """`model_dir`: a checkpoint folder or object-store URI (`Registry.path`); `storage`: the store's
        non-secret options (`cfg.storage.object_store_options()`), refused if they hold credentials."""
        if threads < 1 or batch_rows < 1:
            raise BadInput(f"threads ({threads}) and batch_rows ({batch_rows}) must be at least 1")
        where = location(os.fspath(model_dir))
        self.model_dir = str(where.path().resolve()) if where.local else where.uri
        self.storage = without_secrets(storage)  # pickled with the closure: no credentials
        self.threads = threads
        self.batch_rows = batch_rows
        self.schema = schema  # when given, a checkpoint trained on another schema is refused

    # ---- what the model offers ----
    @property
    def checkpoint(self) -> Checkpoint:
        return _checkpoint(self.model_dir, self.schema, self.storage)

    @property
    def card(self) -> ModelCard:
        return self.checkpoint.card

    @property
    def ur_dim(self) -> int:
        return self.card.ur_dim

    @property
    def ir_dim(self) -> int:
        return self.card.ir_dim

    @property
    def cr_points(self) -> dict[str, int]:
        return dict(self.card.cr_points)

    # ---- extraction ----
    def user_vectors(self, batch: Batch) -> np.ndarray:
        """(n, ur_dim) float32 from the batch's user-field columns only."""
        ck = self._ready()
        fields = ck.encoders.encode_user(batch)
        return self._run(fields.shape[0], ck.model.ur_dim, lambda s: ck.model.user_vectors(fields[s]))

    def item_vectors(self, batch: Batch) -> np.ndarray:
        """(n, ir_dim) float32 from the batch's item-field columns only."""
        ck = self._ready()
        fields = ck.encoders.encode_item(batch)
        return self._run(fields.shape[0], ck.model.ir_dim, lambda s: ck.model.item_vectors(fields[s]))

    def cross_vectors(self, batch: Batch, point: str) -> np.ndarray:
        """(n, cr_points[point]) float32 per sample; needs user and item fields (and the scenario for Crocodile)."""
        ck = self._ready()
        if point not in ck.card.cr_points:
            raise BadInput(f"unknown CR point {point!r}; model {ck.card.model_version} offers "
                           f"{list(ck.card.cr_points)}")
        fields = ck.encoders.encode_fields(batch)
        if ck.card.model.embedding == EmbeddingVariant.crocodile:
            require_columns(batch, [ck.encoders.scenario.name], "Crocodile CR (its gate reads the scenario)")
        if ck.encoders.scenario.name in batch.schema.names:
            scenario = ck.encoders.encode_scenario(batch)
        else:  # plain and STEM mixing towers do not read the scenario; only the heads do
            scenario = torch.zeros(fields.shape[0], dtype=torch.int64)
        width = ck.card.cr_points[point]
        return self._run(fields.shape[0], width, lambda s: ck.model.cross_points(fields[s], scenario[s])[point])

    # ---- internals ----
    def _ready(self) -> Checkpoint:
        torch.set_num_threads(self.threads)
        return self.checkpoint

    def _run(self, n: int, width: int, fn) -> np.ndarray:
        """fn(row index tensor) -> (rows, width), over chunks of batch_rows rows, into one float32 array.

        Chunks under _MIN_ROWS rows are padded by repeating their last row: BLAS takes another code path for 1-2
        row matmuls that differs in the last bit, and a vector must not depend on how Spark cut the batches.
        """
        out = np.empty((n, width), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, n, self.batch_rows):
                stop = min(start + self.batch_rows, n)
                idx = torch.arange(start, stop)
                if len(idx) < _MIN_ROWS:
                    idx = torch.cat([idx, idx[-1:].expand(_MIN_ROWS - len(idx))])
                out[start:stop] = fn(idx)[: stop - start].to(torch.float32).numpy()
        return out


def vectors_to_arrow(vectors: np.ndarray) -> pa.ListArray:
    """(n, d) float32 -> Arrow list<float> (Spark's array<float>; FixedSizeList is rejected, docs/domain.md section 6)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = v.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(v.reshape(-1)))

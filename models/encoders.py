"""Field encoders: raw Arrow columns -> int64 index tensors, fitted on the training days, saved in the checkpoint.

Index 0 of every field is the out-of-vocabulary / missing bucket, so unseen ids, nulls and NaNs at extraction
time get a real (trained) embedding row instead of an error. Categorical values are keyed by their Arrow string
form (an int 1 and a double 1.0 both read "1"), so the users/items tables and the joined samples agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lfm.config.model import ModelSettings
from lfm.config.schema import DataSchema, FieldKind
from lfm.names import BadInput

OOV = 0  # index of the out-of-vocabulary / missing bucket in every field


class MissingColumns(BadInput):
    """A batch lacks columns the model reads."""


def column_array(batch: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    """One column as a single Arrow array, from a table (chunks combined) or a record batch."""
    col = batch.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def require_columns(batch: pa.Table | pa.RecordBatch, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in batch.schema.names]
    if missing:
        raise MissingColumns(f"{what}: the batch lacks columns {missing}; pass the schema's raw columns "
                             f"(it holds {batch.schema.names})")


def as_strings(arr: pa.Array) -> pa.Array:
    """The values as strings, the key every vocabulary uses (dictionary arrays decoded first)."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else pc.cast(arr, pa.string())


@dataclass
class CategoricalEncoder:
    """Vocabulary of one categorical column: value string -> 1..n, everything else -> 0 (OOV)."""

    name: str
    vocab: list[str]
    kind: str = "categorical"
    _value_set: pa.Array | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def cardinality(self) -> int:
        return len(self.vocab) + 1

    @classmethod
    def fit(cls, name: str, arr: pa.Array, min_count: int) -> "CategoricalEncoder":
        counts = pc.value_counts(as_strings(arr).drop_null())
        values = counts.field("values").to_pylist()
        n = counts.field("counts").to_numpy()
        return cls(name, sorted(v for v, c in zip(values, n) if c >= min_count))  # sorted: independent of row order

    def encode(self, arr: pa.Array) -> np.ndarray:
        if self._value_set is None:
            self._value_set = pa.array(self.vocab, pa.string())
        idx = pc.index_in(as_strings(arr), value_set=self._value_set)
        return pc.fill_null(pc.add(idx, 1), OOV).to_numpy(zero_copy_only=False).astype(np.int64)

    def extended(self, arr: pa.Array, min_count: int) -> "CategoricalEncoder":
        """This vocabulary with the values of `arr` it lacks (seen `min_count` times) appended in sorted order:
        every known value keeps its index, so a continued model's rows stay where they were."""
        new = CategoricalEncoder.fit(self.name, arr, min_count).vocab
        known = set(self.vocab)
        return CategoricalEncoder(self.name, self.vocab + [v for v in new if v not in known])

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "vocab": self.vocab}


@dataclass
class NumericEncoder:
    """Quantile buckets of one numeric column: 1..len(boundaries)+1, null/NaN -> 0."""

    name: str
    boundaries: list[float]
    kind: str = "numeric"

    @property
    def cardinality(self) -> int:
        return len(self.boundaries) + 2

    @classmethod
    def fit(cls, name: str, arr: pa.Array, buckets: int) -> "NumericEncoder":
        x = _as_float(arr)
        x = x[np.isfinite(x)]
        if x.size == 0:
            return cls(name, [])
        qs = np.quantile(x, np.linspace(0, 1, buckets + 1)[1:-1])
        return cls(name, [float(b) for b in np.unique(qs)])

    def encode(self, arr: pa.Array) -> np.ndarray:
        x = _as_float(arr)
        idx = np.searchsorted(np.asarray(self.boundaries, dtype=np.float64), x, side="right") + 1
        return np.where(np.isfinite(x), idx, OOV).astype(np.int64)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "boundaries": self.boundaries}


def _as_float(arr: pa.Array) -> np.ndarray:
    try:
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise BadInput(f"numeric field holds values of type {arr.type} that are not numbers ({err}); "
                       "declare it categorical in schema.user_fields / item_fields") from None


Encoder = CategoricalEncoder | NumericEncoder


def _encoder_from_dict(d: dict) -> Encoder:
    if d["kind"] == "categorical":
        return CategoricalEncoder(d["name"], list(d["vocab"]))
    if d["kind"] == "numeric":
        return NumericEncoder(d["name"], [float(b) for b in d["boundaries"]])
    raise ValueError(f"unknown encoder kind {d['kind']!r}")


@dataclass
class FeatureEncoders:
    """Every field's encoder (user fields first, then item fields) plus the scenario vocabulary."""

    user: list[Encoder]
    item: list[Encoder]
    scenario: CategoricalEncoder

    @classmethod
    def fit(cls, table: pa.Table, schema: DataSchema, settings: ModelSettings) -> "FeatureEncoders":
        """Fit on the training days' samples only, so validation/test ids unseen in training are OOV."""
        require_columns(table, schema.feature_names + [schema.scenario], "fitting encoders")

        def fit_one(f) -> Encoder:
            arr = column_array(table, f.name)
            if f.kind == FieldKind.numeric:
                return NumericEncoder.fit(f.name, arr, settings.numeric_buckets)
            return CategoricalEncoder.fit(f.name, arr, settings.min_count)

        return cls(user=[fit_one(f) for f in schema.user_fields], item=[fit_one(f) for f in schema.item_fields],
                   scenario=CategoricalEncoder.fit(schema.scenario, column_array(table, schema.scenario), 1))

    def extended(self, table: pa.Table, settings: ModelSettings) -> "FeatureEncoders":
        """The encoders of a model continued on `table`: categorical fields gain the ids they lack (appended, so
        known ids keep their rows); numeric buckets and the scenario vocabulary stay as they are (a new scenario
        reads the trained unseen-scenario row, as in the parent)."""
        require_columns(table, [e.name for e in self.fields], "continuing the encoders")

        def grow(e: Encoder) -> Encoder:
            if isinstance(e, CategoricalEncoder):
                return e.extended(column_array(table, e.name), settings.min_count)
            return e

        return FeatureEncoders(user=[grow(e) for e in self.user], item=[grow(e) for e in self.item],
                               scenario=self.scenario)

    def growth_over(self, parent: "FeatureEncoders") -> dict[str, int]:
        """Per field, how many values this vocabulary holds beyond `parent`'s."""
        return {e.name: e.cardinality - p.cardinality for e, p in zip(self.fields, parent.fields)}

    @property
    def fields(self) -> list[Encoder]:
        return self.user + self.item

    @property
    def cardinalities(self) -> list[int]:
        return [e.cardinality for e in self.fields]

    def _encode(self, batch: pa.Table | pa.RecordBatch, encoders: list[Encoder], what: str) -> torch.Tensor:
        require_columns(batch, [e.name for e in encoders], what)
        cols = [e.encode(column_array(batch, e.name)) for e in encoders]
        return torch.from_numpy(np.stack(cols, axis=1) if cols else np.zeros((batch.num_rows, 0), np.int64))

    def encode_user(self, batch: pa.Table | pa.RecordBatch) -> torch.Tensor:
        """(n, user fields) int64."""
        return self._encode(batch, self.user, "user fields")

    def encode_item(self, batch: pa.Table | pa.RecordBatch) -> torch.Tensor:
        """(n, item fields) int64."""
        return self._encode(batch, self.item, "item fields")

    def encode_fields(self, batch: pa.Table | pa.RecordBatch) -> torch.Tensor:
        """(n, all fields) int64, user fields first."""
        return self._encode(batch, self.fields, "user and item fields")

    def encode_scenario(self, batch: pa.Table | pa.RecordBatch) -> torch.Tensor:
        require_columns(batch, [self.scenario.name], "scenario")
        return torch.from_numpy(self.scenario.encode(column_array(batch, self.scenario.name)))

    def to_dict(self) -> dict:
        return {"user": [e.to_dict() for e in self.user], "item": [e.to_dict() for e in self.item],
                "scenario": self.scenario.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureEncoders":
        scen = _encoder_from_dict(d["scenario"])
        assert isinstance(scen, CategoricalEncoder)
        return cls(user=[_encoder_from_dict(e) for e in d["user"]], item=[_encoder_from_dict(e) for e in d["item"]],
                   scenario=scen)


def encode_labels(batch: pa.Table | pa.RecordBatch, tasks: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, mask), both (n, tasks) float32: a label is 1 when the column is > 0; null labels are masked."""
    require_columns(batch, tasks, "task labels")
    labels, mask = [], []
    for t in tasks:
        x = _as_float(column_array(batch, t))
        mask.append(np.isfinite(x))
        labels.append(np.nan_to_num(x, nan=0.0) > 0)
    return (torch.from_numpy(np.stack(labels, 1).astype(np.float32)),
            torch.from_numpy(np.stack(mask, 1).astype(np.float32)))

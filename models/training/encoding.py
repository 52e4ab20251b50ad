"""Training frames -> `Batch`es: vector columns, fixed vocabularies, chronological validation split.

Frames are what a Feast point-in-time retrieval returns: the task label, the scenario's raw fields, the keys,
`event_timestamp` and the vector columns `ur`, `ir`, `cr_user`, `cr_item`. A row whose entity has no state before
its time (a user first seen that day has no CR state) has a null vector: it reads as zeros with a False in the
batch's `present` mask, which the ranker's adapters replace by a learned default.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lfm.config.schema import DataSchema
from models.adapters import Representation
from models.downstream import Batch, EmptyScenario, MissingTask, MissingVectors
from models.encoders import CategoricalEncoder, FeatureEncoders, column_array, encode_labels

EVENT_TIMESTAMP = "event_timestamp"  # the row time column of every Feast training set (docs/contracts.md)

Frame = pa.Table | pd.DataFrame


def as_table(frame: Frame) -> pa.Table:
    """A frame as an Arrow table (pandas frames are converted without their index)."""
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pd.DataFrame):
        return pa.Table.from_pandas(frame, preserve_index=False)
    raise TypeError(f"expected a pyarrow Table or pandas DataFrame, got {type(frame).__name__}")


def _is_vector_column(col: pa.Array) -> bool:
    return pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)


def vector_width(tables: list[pa.Table], name: str) -> int:
    """The width of a vector column over frames where some may hold no vector at all (every entity new to it).

    Only a column that no row of any frame holds is refused: the adapter would learn nothing from it. A day with
    no release before it is refused earlier, naming that cause (`pipeline.downstream.training_sets`)."""
    for table in tables:
        col = column_array(table, name)
        if pa.types.is_null(col.type) or col.null_count == len(col):
            continue
        if not _is_vector_column(col):
            raise MissingVectors(f"column {name!r} holds {col.type}, not a list of floats: pass the Feast vectors")
        return int(pc.list_value_length(col.drop_null()[:1])[0].as_py())
    raise MissingVectors(f"no row of the training or test frames has a {name!r} vector: none of their entities had "
                         f"that state before its row (an entity's state starts on the day after it is first seen); "
                         f"train a --transfer variant without {name}, or on later days")


def vector_matrix(table: pa.Table, name: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, width) float32 of a list column and a (n,) bool mask of the rows that had a vector (others are zeros:
    an entity without that state, e.g. a user first seen on the row's day has no CR state yet, is new, not
    broken)."""
    col = column_array(table, name)
    n = len(col)
    if pa.types.is_null(col.type) or col.null_count == n:
        return np.zeros((n, width), dtype=np.float32), np.zeros(n, dtype=bool)
    if not _is_vector_column(col):
        raise MissingVectors(f"column {name!r} holds {col.type}, not a list of floats: pass the Feast vectors")
    present = ~col.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)[present]
    if (lengths != width).any():
        raise MissingVectors(f"column {name!r} mixes vector widths {sorted(set(lengths.tolist()) | {width})}: one "
                             "model version per training set")
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    out = np.zeros((n, width), dtype=np.float32)
    out[present] = values.reshape(-1, width)
    if not np.isfinite(out).all():
        raise MissingVectors(f"column {name!r} holds NaN or infinite values")
    return out, present


@dataclass
class RowEncoder:
    """Frame -> `Batch` with fixed vocabularies: fields by `FeatureEncoders`, keys by their own vocabulary."""

    fields: FeatureEncoders
    users: CategoricalEncoder
    items: CategoricalEncoder
    item_identity: CategoricalEncoder  # every item of every frame: tells recall candidates apart
    representations: tuple[Representation, ...]
    task: str
    widths: dict[str, int]  # representation name -> vector width, over every frame

    @classmethod
    def fit(cls, train: pa.Table, every: list[pa.Table], schema: DataSchema, fields: FeatureEncoders, task: str,
            representations: tuple[Representation, ...]) -> "RowEncoder":
        """Key vocabularies from the training rows only (an item first seen in test is cold: index 0)."""
        all_items = pa.concat_arrays([pc.cast(column_array(t, schema.item_key), pa.string()) for t in every])
        return cls(fields=fields,
                   users=CategoricalEncoder.fit(schema.user_key, column_array(train, schema.user_key), 1),
                   items=CategoricalEncoder.fit(schema.item_key, column_array(train, schema.item_key), 1),
                   item_identity=CategoricalEncoder.fit(schema.item_key, all_items, 1),
                   representations=representations, task=task,
                   widths={r.value: vector_width(every, r.value) for r in representations})

    def encode(self, table: pa.Table) -> tuple[Batch, dict[str, float]]:
        """The labelled rows as a `Batch`, and per representation the share of rows that had a vector."""
        labels, mask = encode_labels(table, [self.task])
        keep = mask[:, 0] > 0
        vectors, masks, coverage = {}, {}, {}
        for rep in self.representations:
            m, present = vector_matrix(table, rep.value, self.widths[rep.value])
            vectors[rep.value], masks[rep.value] = torch.from_numpy(m), torch.from_numpy(present)
            coverage[rep.value] = float(present[keep.numpy()].mean()) if bool(keep.any()) else 0.0
        users, items = column_array(table, self.users.name), column_array(table, self.items.name)
        batch = Batch(fields=self.fields.encode_fields(table), labels=labels[:, 0], vectors=vectors, present=masks,
                      users=torch.from_numpy(self.users.encode(users)),
                      items=torch.from_numpy(self.items.encode(items)),
                      item_keys=torch.from_numpy(self.item_identity.encode(items)))
        return batch.take(torch.nonzero(keep).squeeze(1)), coverage

    def vector_dims(self, batch: Batch) -> dict[Representation, int]:
        return {Representation(k): int(v.shape[1]) for k, v in batch.vectors.items()}


def in_time_order(table: pa.Table, time_column: str) -> pa.Table:
    """Rows sorted by time (stable, so equal times keep their order); unchanged when there is no time column."""
    if time_column not in table.column_names:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(time_column, "ascending")]))


def chronological_split(table: pa.Table, valid_fraction: float, time_column: str) -> tuple[pa.Table, pa.Table]:
    """(train, valid): the last `valid_fraction` of rows by time is validation."""
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    ordered = in_time_order(table, time_column)
    cut = int(round(table.num_rows * (1 - valid_fraction)))
    return ordered.slice(0, cut), ordered.slice(cut)


def check_frames(train: pa.Table, test: pa.Table, task: str, schema: DataSchema, scenario: object = None) -> None:
    """Refuse a missing task column or an empty window before any work (each a clear, fixable message)."""
    where = f"scenario {schema.scenario}={scenario!r}" if scenario is not None else "the training set"
    for name, table in (("training", train), ("test", test)):
        if task not in table.column_names:
            known = [t for t in schema.tasks if t in table.column_names]
            raise MissingTask(f"task column {task!r} does not exist in the {name} frame; tasks present: {known} "
                              f"(schema.tasks lists {schema.tasks})")
        if table.num_rows == 0:
            raise EmptyScenario(f"{where} has no rows in the {name} window: pick a scenario with rows "
                                "on those days, or other days")

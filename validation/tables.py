"""What each validated table looks like (docs/contracts.md), derived from the data schema in config.

One place that knows key, vector column, entity side and column types, so suites, metrics and the gate agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import types as T

from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES, INPUT_TABLES
from validation.errors import QualityError

ALL_TABLES = INPUT_TABLES + EMBEDDING_TABLES
KEY_TYPES = ("IntegerType", "LongType", "StringType")  # the pyspark types an entity key may have


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: str  # entity key column (user or item key); for events, the user key
    entity: str  # "user" or "item": which side of the day's events this table covers
    vector: str | None = None  # the array<float> column of an embedding table
    types: dict[str, str] = field(default_factory=dict)  # column -> contract type (Spark SQL name), non-key columns
    partitioned: bool = True  # by `ds`; users/items are snapshots by valid_from (read as of the day)

    @property
    def is_embedding(self) -> bool:
        return self.vector is not None

    @property
    def columns(self) -> list[str]:
        return [self.key, *self.types]

    def empty_schema(self) -> T.StructType:
        """The contract schema, for an empty stand-in when the table does not exist yet."""
        spark_types = {"array<float>": T.ArrayType(T.FloatType()), "string": T.StringType(), "date": T.DateType(),
                       "timestamp": T.TimestampType()}
        return T.StructType([T.StructField(self.key, T.IntegerType())]
                            + [T.StructField(c, spark_types.get(t, T.StringType())) for c, t in self.types.items()])


def table_spec(cfg: LfmConfig, name: str) -> TableSpec:
    s = cfg.schema
    day = {"model_version": "string", "export_id": "string", "ds": "date", "event_timestamp": "timestamp"}
    if name in ("ur", "ir"):
        key, entity = (s.user_key, "user") if name == "ur" else (s.item_key, "item")
        return TableSpec(name, key, entity, vector=name, types={name: "array<float>", **day})
    if name in ("cr_user", "cr_item"):
        key, entity = (s.user_key, "user") if name == "cr_user" else (s.item_key, "item")
        return TableSpec(name, key, entity, vector=name,
                         types={name: "array<float>", "cr_layer": "string", **day})
    if name == "events":
        return TableSpec(name, s.user_key, "user", types={"ds": "date", "event_timestamp": "timestamp"})
    if name == "users":
        return TableSpec(name, s.user_key, "user", partitioned=False)
    if name == "items":
        return TableSpec(name, s.item_key, "item", partitioned=False)
    raise QualityError(f"no quality suite for table {name!r}: validate one of {list(ALL_TABLES)}")

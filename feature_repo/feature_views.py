"""Per export: feature views UR, IR, CR(user), CR(item), each one `Array(Float32)` field of its width.

Views are tagged with the export spec (id, model version, CR layer), table and dim; the TTL is the refresh cadence plus tolerance
(`feast.ttl_days`): a training row older than that after the latest snapshot gets nulls, not a stale vector.
"""
from __future__ import annotations

import datetime as dt

from feast import Entity, FeatureView, Field
from feast.types import Array, Float32, Int64, String

from lfm.config import KeyType, LfmConfig

from feature_repo.data_sources import embedding_source
from feature_repo.specs import entity_of, key_of, spec_tags, view_name
from lfm.contract import EMBEDDING_TABLES, ExportSpec

_WHAT = {"ur": "user representation (user tower output)", "ir": "item representation (item tower output)",
         "cr_user": "user-level cross representation (decayed aggregate of CR(u,i))",
         "cr_item": "item-level cross representation (decayed aggregate of CR(u,i))"}


def embedding_view(cfg: LfmConfig, table: str, spec: ExportSpec, entity: Entity) -> FeatureView:
    dim = spec.dim(table)
    key_dtype = Int64 if cfg.key_type(entity_of(table)) == KeyType.int64 else String
    tags = {**spec_tags(spec), "table": table, "dim": str(dim)}
    return FeatureView(
        name=view_name(table, spec.id),
        entities=[entity],
        ttl=dt.timedelta(days=cfg.feast.ttl_days),
        schema=[Field(name=key_of(cfg, table), dtype=key_dtype),
                Field(name=table, dtype=Array(Float32), vector_length=dim, tags={"dim": str(dim)})],
        source=embedding_source(cfg, table, spec),
        online=True,
        tags=tags,
        description=f"LFM {_WHAT[table]}, {dim}-d, export {spec.id} of model {spec.model_version}"
                    + (f", CR layer {spec.cr_layer}" if spec.layer(table) else ""),
    )


def feature_views(cfg: LfmConfig, spec: ExportSpec, entities: dict[str, Entity]) -> dict[str, FeatureView]:
    """The four views of one export, by table name."""
    return {t: embedding_view(cfg, t, spec, entities[entity_of(t)]) for t in EMBEDDING_TABLES}

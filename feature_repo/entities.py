"""Entities `user` and `video`; their join keys come from the data schema, so any data set's key names work."""
from __future__ import annotations

from feast import Entity, ValueType

from lfm.config import LfmConfig
from lfm.config.serving import EntityKeyType


def key_value_type(cfg: LfmConfig) -> ValueType:
    return ValueType.INT64 if cfg.feast.entity_key_type == EntityKeyType.int64 else ValueType.STRING


def user_entity(cfg: LfmConfig) -> Entity:
    return Entity(name="user", join_keys=[cfg.schema.user_key], value_type=key_value_type(cfg),
                  description="a user of the platform (LFM user side)")


def video_entity(cfg: LfmConfig) -> Entity:
    return Entity(name="video", join_keys=[cfg.schema.item_key], value_type=key_value_type(cfg),
                  description="an item (video/ad) of the platform (LFM item side)")


def entities(cfg: LfmConfig) -> dict[str, Entity]:
    """The two entities by side ('user', 'item')."""
    return {"user": user_entity(cfg), "item": video_entity(cfg)}

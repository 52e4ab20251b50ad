"""The user and item entities, named after the configured keys (`user_id` -> `user`, `item_id` -> `item`).

Their join keys are the data schema's keys, so any data set's key names work; the name rule is
`DataSchema.user_entity` / `item_entity` (the key without a trailing `_id`). The dict `entities` returns is keyed
by side ('user', 'item'), which is how views pick theirs.
"""
from __future__ import annotations

from feast import Entity, ValueType

from lfm.config import KeyType, LfmConfig


def key_value_type(cfg: LfmConfig, side: str) -> ValueType:
    """Feast's value type of one side's key: it follows the key's declared type (`LfmConfig.key_type`)."""
    return ValueType.INT64 if cfg.key_type(side) == KeyType.int64 else ValueType.STRING


def user_entity(cfg: LfmConfig) -> Entity:
    s = cfg.schema
    return Entity(name=s.user_entity, join_keys=[s.user_key], value_type=key_value_type(cfg, "user"),
                  description=f"a user of the platform, keyed by {s.user_key} (LFM user side)")


def item_entity(cfg: LfmConfig) -> Entity:
    s = cfg.schema
    return Entity(name=s.item_entity, join_keys=[s.item_key], value_type=key_value_type(cfg, "item"),
                  description=f"an item of the platform, keyed by {s.item_key} (LFM item side)")


def entities(cfg: LfmConfig) -> dict[str, Entity]:
    """The two entities by side ('user', 'item')."""
    return {"user": user_entity(cfg), "item": item_entity(cfg)}

"""The data schema: which raw columns are keys, features, scenario, tasks and time.

It is what keeps the platform from being KuaiRand-only: models, refresh, trainers and Feast read column names
from here, and `sources:` (lfm.config.sources) maps each raw input's columns onto these names.
"""
from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldKind(str, Enum):
    """How a raw column becomes a model input."""

    categorical = "categorical"  # looked up in a vocabulary (with an out-of-vocabulary bucket)
    numeric = "numeric"  # bucketised by quantiles learnt on the training days


class FeatureField(Strict):
    name: str
    kind: FieldKind = FieldKind.categorical


class DataSchema(Strict):
    """Column roles of the ingested tables (`events`, `users`, `items`)."""

    user_key: str = "user_id"
    item_key: str = "video_id"
    scenario: str = "tab"
    tasks: list[str] = Field(default_factory=lambda: ["is_click", "long_view", "is_like", "is_profile_enter"])
    timestamp: str = "time_ms"  # the event time (its unit: sources.events.time_unit)
    date: str | None = "date"  # the local calendar day of an event; null = derived from the event time
    timezone: str = "Asia/Shanghai"  # the zone in which days are calendar days; day D ends at D+1 00:00 here
    user_fields: list[FeatureField] = Field(default_factory=lambda: _kuairand_user_fields())
    item_fields: list[FeatureField] = Field(default_factory=lambda: _kuairand_item_fields())

    @model_validator(mode="after")
    def _names_unique(self) -> "DataSchema":
        names = [f.name for f in self.user_fields + self.item_fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature fields listed twice: {dupes}")
        if not self.tasks:
            raise ValueError("schema.tasks must name at least one label column")
        if self.user_key == self.item_key or self.user_entity == self.item_entity:
            raise ValueError(f"user_key {self.user_key!r} and item_key {self.item_key!r} must name different "
                             "columns with different entity names (the key without a trailing '_id')")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.user_fields + self.item_fields]

    @property
    def user_entity(self) -> str:
        """The Feast entity of the user key: `user_id` -> `user`."""
        return entity_name(self.user_key)

    @property
    def item_entity(self) -> str:
        """The Feast entity of the item key: `video_id` -> `video`, `item_id` -> `item`, `sku` -> `sku`."""
        return entity_name(self.item_key)


def entity_name(key: str) -> str:
    """The key without a trailing `_id`, else the key itself."""
    return key[:-3] if key.endswith("_id") and len(key) > 3 else key


def _kuairand_user_fields() -> list[FeatureField]:
    names = ["user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
             "follow_user_num_range", "fans_user_num_range", "friend_user_num_range", "register_days_range"]
    names += [f"onehot_feat{i}" for i in range(18)]
    return [FeatureField(name=n) for n in names]


def _kuairand_item_fields() -> list[FeatureField]:
    names = ["video_id", "author_id", "video_type", "upload_type", "visible_status", "music_id", "music_type", "tag"]
    return [FeatureField(name=n) for n in names] + [FeatureField(name="video_duration", kind=FieldKind.numeric)]

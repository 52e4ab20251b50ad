"""The data schema: which raw columns are keys, features, scenario, tasks and time.

It is what keeps the platform from being KuaiRand-only: models, refresh and trainers read column names from here.
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
    timestamp: str = "time_ms"  # epoch milliseconds in the raw log
    date: str = "date"  # yyyymmdd in the raw log, a local calendar day
    timezone: str = "Asia/Shanghai"  # the zone in which `date` is a calendar day; day D ends at D+1 00:00 here
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
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.user_fields + self.item_fields]


def _kuairand_user_fields() -> list[FeatureField]:
    names = ["user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
             "follow_user_num_range", "fans_user_num_range", "friend_user_num_range", "register_days_range"]
    names += [f"onehot_feat{i}" for i in range(18)]
    return [FeatureField(name=n) for n in names]


def _kuairand_item_fields() -> list[FeatureField]:
    names = ["video_id", "author_id", "video_type", "upload_type", "visible_status", "music_id", "music_type", "tag"]
    return [FeatureField(name=n) for n in names] + [FeatureField(name="video_duration", kind=FieldKind.numeric)]

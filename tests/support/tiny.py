"""Tiny hand-made samples shared by the LFM tests (no tests here; no Spark): 3 user, 3 item fields, 3 tabs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from tests.support.config import make_config
from lfm.config import LfmConfig

TINY_SCHEMA = {
    "tasks": ["is_click", "long_view"],
    "user_fields": [{"name": "user_id"}, {"name": "user_active_degree"},
                    {"name": "register_days", "kind": "numeric"}],
    "item_fields": [{"name": "video_id"}, {"name": "tag"}, {"name": "video_duration", "kind": "numeric"}],
}
TINY_MODEL = {"embedding_dim": 4, "numeric_buckets": 4, "user_tower": [8, 6], "item_tower": [8, 5],
              "cross_layers": 2, "dnn": [12, 7], "stem_task_dim": 3, "crocodile_tables": 3}


def tiny_config(root: Path, **model) -> LfmConfig:
    return make_config(root, schema=TINY_SCHEMA, model={**TINY_MODEL, **model},
                       train={"batch_size": 64, "max_epochs": 2, "threads": 1, "eval_batch_size": 256})


def tiny_table(n: int = 400, seed: int = 0) -> pa.Table:
    """Samples with learnable structure: clicks depend on user id parity, item tag and the scenario."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 30, n)
    item = rng.integers(0, 20, n)
    tab = rng.choice([0, 1, 2], n, p=[0.7, 0.2, 0.1])
    tag = np.array(["a", "b", "c"])[item % 3]
    logit = (user % 2) * 1.5 - 0.8 + (item % 3 == 0) * 1.0 - 0.5 * tab
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    long_view = (click & (rng.random(n) < 0.6)).astype(np.int32)
    return pa.table({
        "user_id": pa.array(user, pa.int32()),
        "user_active_degree": pa.array(np.array(["high", "low", "mid"])[user % 3]),
        "register_days": pa.array(user * 3.0 + 1, pa.float64()),
        "video_id": pa.array(item, pa.int32()),
        "tag": pa.array(tag),
        "video_duration": pa.array(np.where(item % 7 == 0, np.nan, item * 1000.0)),
        "tab": pa.array(tab, pa.int32()),
        "is_click": pa.array(click),
        "long_view": pa.array(long_view),
        "time_ms": pa.array(np.arange(n, dtype=np.int64) * 1000 + 1_650_000_000_000),
    })

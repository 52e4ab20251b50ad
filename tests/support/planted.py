"""Planted frames for the downstream tests: a small world whose transferred vectors carry known signal.

The frames look like a Feast training set: keys, scenario, raw fields, a task, `event_timestamp` and the four
vector columns. Clicks depend on latent user/item factors; UR/IR/CR are noisy views of those factors, while the
raw fields are coarse ones, so transferred vectors carry signal the fields alone do not.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lfm.config.schema import DataSchema, FeatureField, FieldKind

FACTORS = 4
VECTOR_DIM = 6
START = pd.Timestamp("2022-05-02", tz="UTC")
EDGES = np.array([-0.43, 0.43])  # standard-normal terciles


def planted_schema() -> DataSchema:
    return DataSchema(
        user_fields=[FeatureField(name="user_id"), *(FeatureField(name=f"u_b{j}") for j in range(FACTORS)),
                     FeatureField(name="u_act")],
        item_fields=[FeatureField(name="video_id"), *(FeatureField(name=f"i_b{j}") for j in range(FACTORS)),
                     FeatureField(name="i_pop"),
                     FeatureField(name="i_len", kind=FieldKind.numeric)],
        tasks=["is_click", "long_view"],
    )


@dataclass(frozen=True)
class Planted:
    train: pd.DataFrame
    test: pd.DataFrame
    schema: DataSchema
    pretrain: pd.DataFrame  # earlier days of the same world, for an LFM checkpoint


def planted_frames(rows: int = 3000, test_rows: int = 1000, users: int = 200, items: int = 80, seed: int = 0,
                   signal: float = 3.0, bias: float = 1.0, pretrain_rows: int = 0) -> Planted:
    """`signal` weighs the user-item interaction (carried by the vectors), `bias` the additive user and item
    effects (carried by the fields `u_act`, `i_pop` as well)."""
    rng = np.random.default_rng(seed)
    uf = rng.normal(size=(users, FACTORS))
    vf = rng.normal(size=(items, FACTORS))
    ub = rng.normal(size=users)
    vb = rng.normal(size=items)
    proj_u = rng.normal(size=(FACTORS, VECTOR_DIM))
    proj_v = rng.normal(size=(FACTORS, VECTOR_DIM))

    def frame(n: int, day0: int, days: int) -> pd.DataFrame:
        u = rng.integers(0, users, n)
        v = rng.integers(0, items, n)
        score = signal * (uf[u] * vf[v]).sum(1) / np.sqrt(FACTORS) + bias * (ub[u] + vb[v]) - 0.3
        click = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(np.int64)
        t = START + pd.to_timedelta(np.sort(rng.integers(day0 * 86_400, (day0 + days) * 86_400, n)), unit="s")
        ur = uf[u] @ proj_u + 0.1 * rng.normal(size=(n, VECTOR_DIM))
        ir = vf[v] @ proj_u + 0.1 * rng.normal(size=(n, VECTOR_DIM))  # same space as UR: an inner product scores
        cr = (uf[u] * vf[v]) @ proj_v
        df = pd.DataFrame({
            "user_id": u, "video_id": v, "tab": 0, "event_timestamp": t,
            **{f"u_b{j}": np.digitize(uf[u, j], EDGES) for j in range(FACTORS)},
            **{f"i_b{j}": np.digitize(vf[v, j], EDGES) for j in range(FACTORS)},
            "u_act": np.digitize(ub[u], EDGES), "i_pop": np.digitize(vb[v], EDGES),
            "i_len": rng.exponential(1.0, n),
            "is_click": click, "long_view": click * (rng.random(n) < 0.5),
        })
        df["ur"] = list(ur.astype(np.float32))
        df["ir"] = list(ir.astype(np.float32))
        df["cr_user"] = list((cr + 0.3 * rng.normal(size=(n, VECTOR_DIM))).astype(np.float32))
        df["cr_item"] = list((uf[u] @ proj_v + 0.3 * rng.normal(size=(n, VECTOR_DIM))).astype(np.float32))
        return df

    earlier = frame(pretrain_rows, -7, 7)
    return Planted(train=frame(rows, 0, 5), test=frame(test_rows, 5, 2), schema=planted_schema(), pretrain=earlier)

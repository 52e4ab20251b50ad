"""The layer-selection probe's scoring and choice rule on planted data (no Spark)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from spark_jobs.select_layer import _auc, bootstrap_gap_se, choose, score_points

D = [dt.date(2022, 5, 1) + dt.timedelta(days=i) for i in range(3)]


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500), 1)  # many ties
    assert _auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert np.isnan(_auc(np.ones(5), np.arange(5.0)))


def _rows(n_per_day: int = 600, seed: int = 0) -> pd.DataFrame:
    """Point `good` carries the label signal in its first dimension, `noise` does not; `wide` = good + 7 noise dims."""
    rng = np.random.default_rng(seed)
    frames = []
    for d in D:
        z = rng.normal(size=n_per_day)
        y = (z + 0.5 * rng.normal(size=n_per_day) > 0).astype(int)
        scen = np.where(rng.random(n_per_day) < 0.8, "1", "0")
        base = {"scenario": scen, "label": y, "day": d, "row": np.arange(n_per_day) + (D.index(d) << 32)}
        feats = {"good": np.c_[z, rng.normal(size=(n_per_day, 1))],
                 "noise": rng.normal(size=(n_per_day, 2)),
                 "wide": np.c_[z, rng.normal(size=(n_per_day, 7))]}
        for point, x in feats.items():
            frames.append(pd.DataFrame({**base, "point": point, "cr": list(x)}))
    return pd.concat(frames, ignore_index=True)


def test_probe_scores_the_informative_point_high_and_noise_near_half():
    ps = score_points(_rows(), ["good", "noise", "wide"], D[-1], min_test_rows=50)
    assert ps.scores["good"] > 0.8 and abs(ps.scores["noise"] - 0.5) < 0.1
    assert {r["scenario"] for r in ps.table} == {"0", "1"}
    assert all(r["n_train"] > r["n_test"] for r in ps.table)


def test_choice_prefers_the_narrowest_point_within_one_se():
    ps = score_points(_rows(), ["good", "noise", "wide"], D[-1], min_test_rows=50)
    best = max((p for p in ps.scores), key=lambda p: ps.scores[p])
    se = bootstrap_gap_se(ps, best, rounds=50)
    assert se[best] == 0.0 and se["noise"] > 0
    widths = {"good": 2, "noise": 2, "wide": 8}
    chosen = choose(ps.scores, widths, se, ("good", "noise", "wide"))
    assert chosen == "good"  # wide is no better within noise; noise is far worse
    # with no SE (no bootstrap) the rule is the plain best score
    assert choose({"a": 0.7, "b": 0.71}, {"a": 2, "b": 8}, {}, ("a", "b")) == "b"
    assert choose({"a": 0.7, "b": 0.71}, {"a": 2, "b": 8}, {"a": 0.02, "b": 0.0}, ("a", "b")) == "a"

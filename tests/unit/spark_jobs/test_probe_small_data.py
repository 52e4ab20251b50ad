"""Layer selection on a small data set: a probe that can score no scenario says how big the largest one is and
which setting to lower (no Spark: the scoring and the message are plain functions)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from spark_jobs.select_layer import probe_shortfall, score_points

D1, D2 = dt.date(2024, 3, 10), dt.date(2024, 3, 11)


def _rows(n_per_day: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for day in (D1, D2):
        for i in range(n_per_day):
            label = int(rng.random() < 0.5)
            rows.append({"point": "dnn1", "scenario": "home", "day": day, "label": label, "row": len(rows),
                         "cr": rng.normal(size=3) + label})
    return pd.DataFrame(rows)


def test_too_few_test_rows_name_the_counts_and_the_setting():
    rows = _rows(40)
    ps = score_points(rows, ["dnn1"], D2, min_test_rows=200)
    assert ps.scores == {"dnn1": None}
    message = probe_shortfall(ps.table, 200, D2)
    assert "no scenario has 200+ test rows with both classes on 2024-03-11" in message
    assert "scenario 'home', has 40 test rows" in message and "40 training rows" in message
    assert "lower refresh.probe_min_test_rows in lfm.yaml (at least 10)" in message
    # The documented setting: with the minimum lowered the same rows are scored.
    assert score_points(rows, ["dnn1"], D2, min_test_rows=20).scores["dnn1"] > 0.5

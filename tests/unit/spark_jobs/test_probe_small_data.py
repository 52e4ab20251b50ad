"""Layer selection on a small data set: a probe that can score no scenario says how big the largest one is, which
rows count and which settings to change; a probe without signal is refused, never recorded (no Spark: the scoring,
the rule and the messages are plain functions)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

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


def test_the_shortfall_says_which_users_count_and_every_option():
    message = probe_shortfall(score_points(_rows(40), ["dnn1"], D2, min_test_rows=200).table, 200, D2)
    assert "a user needs events on an earlier day of the chain (the warm-up days or an earlier probe day), so " \
           "users without earlier events drop out" in message
    for option in ("--warmup-days", "--days", "refresh.probe_min_test_rows"):
        assert option in message


def test_a_probe_without_signal_is_refused_and_never_chosen():
    """The rule: a point may be chosen only if its probe AUC (the point estimate) is above 0.5; none: refused."""
    from spark_jobs.select_layer import NoProbeSignal, choose, require_signal

    flat = {"embed": 0.5, "dnn1": 0.4871, "dnn2": None}
    with pytest.raises(NoProbeSignal) as refused:
        require_signal(flat, "click", D2, "v1")
    message = str(refused.value)
    assert "no CR point's probe beats chance (AUC > 0.5) for click on 2024-03-11: embed 0.5000, dnn1 0.4871" in message
    assert "nothing recorded for model v1" in message and "--days" in message and "--warmup-days" in message
    with pytest.raises(NoProbeSignal):
        choose(flat, {"embed": 4, "dnn1": 8, "dnn2": 16}, {}, ("embed", "dnn1", "dnn2"))
    # one point above chance: it is chosen even where a narrower one at chance is within one SE of it
    weak = {"embed": 0.5, "dnn1": 0.52}
    require_signal(weak, "click", D2, "v1")
    assert choose(weak, {"embed": 4, "dnn1": 8}, {"embed": 0.05, "dnn1": 0.0}, ("embed", "dnn1")) == "dnn1"


def test_the_selection_table_names_scenarios():
    from spark_jobs.select_layer import LayerSelection

    rows = [{"layer": "dnn1", "scenario": "home", "n_train": 40, "n_test": 40, "positives": 20, "width": 3,
             "auc": 0.61}]
    sel = LayerSelection("v1", "dnn1", {"dnn1": 0.61}, rows, [D1, D2], [], "click", "dnn1")
    head = sel.markdown().splitlines()[0]
    assert head.startswith("| point | width | scenario home (n=40) |") and "tab" not in head

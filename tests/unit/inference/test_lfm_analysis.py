"""Collapse analysis (inference/analysis.py) and ranking metrics on inputs whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from inference.analysis import analyse, effective_rank, information_abundance, singular_spectrum
from models.training.metrics import auc, gauc, grouped_auc, monitor_score


def test_identity_is_fully_spread():
    r = analyse(np.eye(8))
    np.testing.assert_allclose(r.singular_values, np.ones(8))
    assert r.information_abundance == pytest.approx(8.0)
    assert r.effective_rank == pytest.approx(8.0)


def test_rank_one_is_collapsed():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(50, 1)) @ rng.normal(size=(1, 6))  # every row on one line
    s = singular_spectrum(m)
    assert s[0] == pytest.approx(1.0) and np.all(s[1:] < 1e-6)
    assert information_abundance(m) == pytest.approx(1.0, abs=1e-5)
    assert effective_rank(m) == pytest.approx(1.0, abs=1e-4)


def test_gaussian_cloud_is_near_full_rank():
    m = np.random.default_rng(1).normal(size=(20_000, 16))
    r = analyse(m)
    assert np.all(np.diff(r.singular_values) <= 1e-12) and r.singular_values[0] == 1.0
    assert 15.0 < r.effective_rank <= 16.0 and 14.0 < r.information_abundance <= 16.0


def test_scaling_rows_and_zero_rows_do_not_matter():
    rng = np.random.default_rng(2)
    m = rng.normal(size=(100, 5))
    scaled = m * rng.uniform(0.1, 10, size=(100, 1))  # rows are L2-normalised first
    with_zeros = np.vstack([m, np.zeros((3, 5))])
    assert effective_rank(scaled) == pytest.approx(effective_rank(m))
    assert effective_rank(with_zeros) == pytest.approx(effective_rank(m))


def test_bad_matrices_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        analyse(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="2-d"):
        analyse(np.ones(3))


def test_auc_and_gauc_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.normal(size=2000) + 0.7 * y, 1)  # many ties
    users = rng.integers(0, 40, 2000)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    per = grouped_auc(users, y, s)
    weights, values = [], []
    for u in np.unique(users):
        sel = users == u
        if 0 < y[sel].sum() < sel.sum():
            values.append(roc_auc_score(y[sel], s[sel]))
            weights.append(sel.sum())
    assert gauc(users, y, s) == pytest.approx(np.average(values, weights=weights), abs=1e-12)
    assert per["n"].sum() == 2000


def test_one_class_groups_have_no_auc():
    per = grouped_auc(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert np.isnan(per.loc[0, "auc"]) and per.loc[1, "auc"] == 1.0
    assert np.isnan(auc(np.ones(3), np.arange(3.0)))


def test_monitor_is_row_weighted_over_scenarios_and_ignores_the_pooled_row():
    rows = [{"task": "c", "scenario": "*", "n": 100, "auc": 0.9},
            {"task": "c", "scenario": "1", "n": 75, "auc": 0.6},
            {"task": "c", "scenario": "2", "n": 25, "auc": 0.8},
            {"task": "l", "scenario": "1", "n": 10, "auc": 0.5},
            {"task": "l", "scenario": "2", "n": 10, "auc": None}]
    assert monitor_score(rows) == pytest.approx((0.65 + 0.5) / 2)

"""The transfer report's statistics on hand-checkable cases: AUC, GAUC, resamples and paired lift intervals."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.support.config import REPO

sys.path.insert(0, str(REPO))  # bench/ is a folder of scripts, not an installed package
from bench.transfer.stats import (RowBootstrap, auc, gauc, paired_lift, resample_counts,  # noqa: E402
                                  weighted_auc, weighted_gauc)


def test_auc_by_hand_and_against_sklearn():
    # positives 0.4, 0.8 against negatives 0.1, 0.35: 0.8 beats both, 0.4 beats both -> 4/4; swap one
    assert auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 1.0
    assert auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.3, 0.35, 0.8])) == 0.75
    # a tie between a positive and a negative counts one half: (0.5 + 1 + 1 + 1) / 4
    assert auc(np.array([0, 1, 1, 0]), np.array([0.5, 0.5, 0.7, 0.2])) == 0.875
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y * 0.5, 1)  # rounded: many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(auc(np.ones(4), np.arange(4.0)))  # one class: undefined, never a number


def test_weights_are_repeated_rows():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)
    w = rng.integers(0, 4, (3, 60))
    got = weighted_auc(y, s, w)
    for b in range(3):
        idx = np.repeat(np.arange(60), w[b])
        assert got[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)


def test_gauc_by_hand():
    users = np.array([7, 7, 3, 3, 3, 3, 9, 9])
    labels = np.array([1, 0, 1, 0, 0, 1, 1, 1])
    scores = np.array([.9, .1, .2, .3, .1, .05, .5, .6])
    # user 7: AUC 1 over 2 rows; user 3: positives .2, .05 vs negatives .3, .1 -> (1 + 0 + 0 + 0) / 4 = 0.25
    # over 4 rows; user 9 has one class and drops out -> (1 * 2 + 0.25 * 4) / 6
    assert gauc(users, labels, scores) == pytest.approx(3 / 6)
    # a resample that drops user 7's negative leaves only user 3
    w = np.array([[1, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
    assert weighted_gauc(users, labels, scores, w) == pytest.approx([0.25, 0.5])


def test_gauc_matches_pretraining_evaluation():
    from models.training.metrics import gauc as pretrain_gauc

    rng = np.random.default_rng(2)
    users = rng.integers(0, 40, 800)
    y = rng.integers(0, 2, 800)
    s = np.round(rng.normal(size=800) + 0.3 * y, 1)
    assert gauc(users, y, s) == pytest.approx(pretrain_gauc(users, y, s), abs=1e-12)


def test_resample_counts():
    c = resample_counts(50, 30, seed=4)
    assert c.shape == (30, 50) and (c.sum(axis=1) == 50).all()
    assert (c == resample_counts(50, 30, seed=4)).all()  # the same resamples for every model of a tab
    assert not (c == resample_counts(50, 30, seed=5)).all()


def test_identical_models_have_a_zero_interval():
    rng = np.random.default_rng(3)
    y, s = rng.integers(0, 2, 300), rng.random(300)
    boot = RowBootstrap(y, rng.integers(0, 30, 300), rounds=50, seed=0)
    a, _ = boot.metrics(s)
    lift = paired_lift([auc(y, s)], [auc(y, s)], [a], [a])
    assert (lift.estimate, lift.low, lift.high) == (0.0, 0.0, 0.0) and not lift.excludes_zero


def test_a_clear_difference_excludes_zero_and_noise_does_not():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    good, noise_a, noise_b = y + rng.normal(0, 0.8, 400), rng.random(400), rng.random(400)
    boot = RowBootstrap(y, np.arange(400), rounds=200, seed=1)
    (ga, _), (na, _), (nb, _) = boot.metrics(good), boot.metrics(noise_a), boot.metrics(noise_b)
    assert paired_lift([auc(y, good)], [auc(y, noise_a)], [ga], [na]).excludes_zero
    noise = paired_lift([auc(y, noise_a)], [auc(y, noise_b)], [na], [nb])
    assert not noise.excludes_zero and noise.low < noise.estimate < noise.high


def test_paired_lift_averages_seeds_inside_each_resample():
    """The interval equals a plain loop: per resample, sklearn AUC of each run on the drawn rows, runs averaged."""
    rng = np.random.default_rng(6)
    n, rounds = 120, 40
    y = rng.integers(0, 2, n)
    runs_a = [y * 0.4 + rng.random(n) for _ in range(2)]  # two seeds of model A
    runs_b = [rng.random(n) for _ in range(3)]  # three seeds of model B
    boot = RowBootstrap(y, np.zeros(n), rounds=rounds, seed=9)
    got = paired_lift([auc(y, r) for r in runs_a], [auc(y, r) for r in runs_b],
                      [boot.metrics(r)[0] for r in runs_a], [boot.metrics(r)[0] for r in runs_b])
    diffs = []
    for counts in resample_counts(n, rounds, seed=9):
        idx = np.repeat(np.arange(n), counts)
        diffs.append(np.mean([roc_auc_score(y[idx], r[idx]) for r in runs_a])
                     - np.mean([roc_auc_score(y[idx], r[idx]) for r in runs_b]))
    assert got.low == pytest.approx(np.percentile(diffs, 2.5), abs=1e-12)
    assert got.high == pytest.approx(np.percentile(diffs, 97.5), abs=1e-12)
    assert got.estimate == pytest.approx(np.mean([roc_auc_score(y, r) for r in runs_a])
                                         - np.mean([roc_auc_score(y, r) for r in runs_b]), abs=1e-12)

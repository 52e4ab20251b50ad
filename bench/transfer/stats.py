"""Paired test-row bootstrap of the transfer report: AUC, GAUC and lift intervals, in pure numpy.

Why paired: on the small tabs the 1-2.5k test rows are the largest noise source, larger than the spread over
downstream seeds. Scoring two models on the *same* resampled rows cancels the difficulty of the rows they share,
so the interval of a lift measures whether the two models differ on this population, not how noisy each AUC is.
Why weights: a bootstrap resample is a vector of per-row counts; AUC and GAUC with integer row weights equal the
plain metrics on the resample with its duplicated rows, and one sort per model serves every resample.
(docs/domain.md sections 5 and 8: test-row noise dominates on small tabs; paired intervals are the evidence.)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided percentile interval."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of each weight row: (n,) labels and scores, (B, n) integer row weights -> (B,); ties count one half.

    NaN where a weight row leaves one class without weight.
    """
    return _grouped(np.zeros(len(labels), np.int64), labels, scores, np.atleast_2d(weights).T, per_group=False)


def weighted_gauc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-weighted mean of per-group AUC over the groups holding both classes: (B, n) weights -> (B,)."""
    return _grouped(groups, labels, scores, np.atleast_2d(weights).T, per_group=True)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(weighted_auc(labels, scores, np.ones((1, len(labels))))[0])


def gauc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-user AUC over users with both labels, weighted by their rows (GAUC)."""
    return float(weighted_gauc(groups, labels, scores, np.ones((1, len(labels))))[0])


def _grouped(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, weights_t: np.ndarray,
             per_group: bool) -> np.ndarray:
    """The shared kernel on (n, B) weights (rows x resamples: row gathers and sums over rows stay contiguous):
    sort once by (group, score), then per resample sum positive weight x (negative weight below it in its group
    + half the negative weight tied with it)."""
    g, y = np.asarray(groups), np.asarray(labels) > 0
    s = np.asarray(scores, dtype=np.float64)
    if not len(g) == len(y) == len(s) == weights_t.shape[0]:
        raise ValueError(f"groups {len(g)}, labels {len(y)}, scores {len(s)} and weights {weights_t.shape[::-1]} "
                         "disagree")
    if len(s) == 0:
        return np.full(weights_t.shape[1], np.nan)
    order = np.lexsort((s, g))
    g, y, s = g[order], y[order], s[order]
    w = np.asarray(weights_t[order], dtype=np.int64)  # (n, B) integer counts: every sum below is exact
    group_start = np.r_[True, g[1:] != g[:-1]]
    tie_start = group_start | np.r_[True, s[1:] != s[:-1]]
    pos = w * y[:, None]
    neg = w - pos
    if not tie_start.all():  # (T, B): weight per run of tied rows (without ties every row is its own run)
        ties = np.flatnonzero(tie_start)
        pos, neg = np.add.reduceat(pos, ties, axis=0), np.add.reduceat(neg, ties, axis=0)
    group_of_tie = np.cumsum(group_start)[tie_start] - 1  # (T,)
    firsts = np.flatnonzero(np.r_[True, group_of_tie[1:] != group_of_tie[:-1]])  # first tie run of each group
    below = np.cumsum(neg, axis=0) - neg  # negative weight before each run, over all groups ...
    below -= below[firsts][group_of_tie]  # ... minus what lies in earlier groups
    wins2 = np.add.reduceat(pos * (2 * below + neg), firsts, axis=0)  # (G, B) twice the wins: a tie is one half
    p, n = np.add.reduceat(pos, firsts, axis=0), np.add.reduceat(neg, firsts, axis=0)
    both = (p > 0) & (n > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(both, wins2 / (2.0 * p * n), 0.0)
        if not per_group:
            return np.where(both[0], per[0], np.nan)
        rows = np.where(both, p + n, 0.0)
        total = rows.sum(axis=0)
        return np.where(total > 0, (per * rows).sum(axis=0) / total, np.nan)


def resample_counts(n: int, rounds: int, seed: int) -> np.ndarray:
    """(rounds, n) bootstrap counts: row i drawn counts[b, i] times in resample b (each row sums to n)."""
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(rounds)]) if n else \
        np.zeros((rounds, 0), np.int64)
    return counts.astype(np.uint8 if counts.size == 0 or counts.max() < 256 else np.uint16)


class RowBootstrap:
    """One tab's test rows and one fixed set of resamples; every model of the tab is scored on the same ones."""

    def __init__(self, labels: np.ndarray, groups: np.ndarray, rounds: int, seed: int, chunk: int = 100):
        self.labels, self.groups = np.asarray(labels), np.asarray(groups)
        counts = resample_counts(len(self.labels), rounds, seed)
        # (n, chunk) blocks, rows x resamples: the kernel's layout; chunks bound its float64 temporaries
        self.blocks = [np.ascontiguousarray(counts[i:i + chunk].T) for i in range(0, rounds, chunk)]

    def metrics(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(AUC, GAUC) of one model on every resample, each (rounds,)."""
        if len(scores) != len(self.labels):
            raise ValueError(f"{len(scores)} scores for {len(self.labels)} test rows")
        zeros = np.zeros(len(self.labels), np.int64)
        aucs = [_grouped(zeros, self.labels, scores, b, per_group=False) for b in self.blocks]
        gaucs = [_grouped(self.groups, self.labels, scores, b, per_group=True) for b in self.blocks]
        return np.concatenate(aucs), np.concatenate(gaucs)


def paired_lift(a_points: Sequence[float], b_points: Sequence[float], a_boot: Sequence[np.ndarray],
                b_boot: Sequence[np.ndarray], confidence: float = CONFIDENCE) -> Interval:
    """Lift of model A over model B (metric of A minus metric of B) with a paired percentile interval.

    A and B are each one or more runs (seeds) scored on the same rows and the same resamples: within each
    resample the runs of a model are averaged first, then the two averages are subtracted. The estimate is the
    difference of the runs' mean metric on the full test rows. Resamples where a metric is undefined drop out.
    """
    if not len(a_boot) or not len(b_boot):
        raise ValueError("a lift needs at least one run of each model")
    diff = np.mean(np.stack(a_boot), axis=0) - np.mean(np.stack(b_boot), axis=0)
    diff = diff[np.isfinite(diff)]
    estimate = float(np.mean(a_points) - np.mean(b_points))
    if len(diff) == 0:
        return Interval(estimate, np.nan, np.nan)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diff, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high))

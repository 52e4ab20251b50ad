"""Ranking metrics of training and evaluation: AUC by rank sums, per group and per user (GAUC).

The same AUC serves pretraining (per scenario and task, every epoch) and the downstream trainer.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def grouped_auc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """AUC per group by rank sums (ties averaged): columns n, positives, auc (NaN where one class is missing).

    Pure numpy (one lexsort), because evaluation runs it for every (scenario, task) and every user each epoch.
    """
    g, s, y = np.asarray(groups), np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    n = len(g)
    if n == 0:
        return pd.DataFrame({"n": [], "positives": [], "auc": []})
    order = np.lexsort((s, g))
    g, s, y = g[order], s[order], y[order]
    group_start = np.r_[True, g[1:] != g[:-1]]
    tie_start = group_start | np.r_[True, s[1:] != s[:-1]]
    idx = np.arange(n)
    pos = idx - np.maximum.accumulate(np.where(group_start, idx, 0)) + 1  # 1-based rank within the group
    tie = np.cumsum(tie_start) - 1
    rank = (np.bincount(tie, weights=pos) / np.bincount(tie))[tie]  # ties share their average rank
    gid = np.cumsum(group_start) - 1
    count = np.bincount(gid).astype(np.float64)
    positives = np.bincount(gid, weights=y)
    rank_sum = np.bincount(gid, weights=rank * y)
    negatives = count - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    auc = np.where((positives > 0) & (negatives > 0), auc, np.nan)
    return pd.DataFrame({"n": count.astype(np.int64), "positives": positives, "auc": auc}, index=g[group_start])


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(grouped_auc(np.zeros(len(labels), np.int64), labels, scores)["auc"].iloc[0])


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUC over users who have both classes."""
    per_user = grouped_auc(users, labels, scores).dropna(subset=["auc"])
    if per_user.empty:
        return float("nan")
    return float((per_user["auc"] * per_user["n"]).sum() / per_user["n"].sum())


def monitor_score(rows: list[dict]) -> float:
    """Mean over tasks of the row-weighted mean of per-scenario AUCs (the early-stopping criterion)."""
    per_task = []
    for task in dict.fromkeys(r["task"] for r in rows):
        rs = [r for r in rows if r["task"] == task and r["scenario"] != "*" and r["auc"] is not None]
        if rs:
            per_task.append(sum(r["auc"] * r["n"] for r in rs) / sum(r["n"] for r in rs))
    return float(np.mean(per_task)) if per_task else float("nan")


def metrics_table(metrics: dict, split: str = "test", tasks: list[str] | None = None) -> str:
    """A plain-text table of one split's rows (scenario, task, n, AUC, GAUC)."""
    rows = [r for r in metrics.get(split, []) if tasks is None or r["task"] in tasks]
    lines = [f"{'scenario':>8} {'task':<18} {'n':>8} {'pos':>7} {'AUC':>7} {'GAUC':>7}"]
    for r in rows:
        fmt = lambda x: f"{x:7.4f}" if x is not None else "      -"  # noqa: E731
        lines.append(f"{r['scenario']:>8} {r['task']:<18} {r['n']:>8} {r['positives']:>7} {fmt(r['auc'])} "
                     f"{fmt(r['gauc'])}")
    return "\n".join(lines)

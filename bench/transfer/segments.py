"""Where transfer pays: lifts on segments of a tab's test rows, each with its own paired bootstrap interval.

Users by their rows in the target tab on days before the row's day (0 / 1-5 / more: the cold users are where a
model of the tab alone knows nothing and the LFM has seen the user elsewhere); items by the first day they appear
anywhere in the log (on one of the 3 days before the row's day or on it, against older items: an item the tab's
model has barely seen). The log starts on its first day, so "older" means first seen on an earlier day of the log.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.transfer.stats import Interval, RowBootstrap, auc, paired_lift

NEW_ITEM_DAYS = 3
USER_BINS = ((0, 0, "users with 0 earlier rows in the tab"), (1, 5, "users with 1-5"),
             (6, None, "users with more than 5"))
NEW_ITEMS, OLD_ITEMS = f"items first seen in the last {NEW_ITEM_DAYS} days", "older items"


@dataclass(frozen=True)
class SegmentHistory:
    """What the segments are cut by: rows per (user, scenario, day) and each item's first day in the log."""

    user_rows: pd.DataFrame  # key, scenario, ds, rows
    item_first: pd.DataFrame  # key, first (date)


def segment_masks(users: np.ndarray, items: np.ndarray, days: np.ndarray, tab: str,
                  history: SegmentHistory) -> dict[str, np.ndarray]:
    """Segment name -> boolean mask over the test rows (their user keys, item keys and days)."""
    days = pd.to_datetime(pd.Series(days)).dt.date.to_numpy()
    h = history.user_rows
    h = h[h["scenario"].astype(str) == str(tab)]
    per_user: dict[str, list[tuple[dt.date, int]]] = {}
    for key, ds, n in zip(h["key"].astype(str), pd.to_datetime(h["ds"]).dt.date, h["rows"]):
        per_user.setdefault(key, []).append((ds, int(n)))
    earlier = np.array([sum(n for d, n in per_user.get(str(u), ()) if d < day) for u, day in zip(users, days)])
    masks = {}
    for low, high, name in USER_BINS:
        masks[name] = (earlier >= low) & (earlier <= high if high is not None else True)
    first = dict(zip(history.item_first["key"].astype(str), pd.to_datetime(history.item_first["first"]).dt.date))
    new = np.array([first.get(str(i), day) >= day - dt.timedelta(days=NEW_ITEM_DAYS) for i, day in zip(items, days)])
    masks[NEW_ITEMS], masks[OLD_ITEMS] = new, ~new
    return masks


def segment_lift(labels: np.ndarray, users: np.ndarray, mask: np.ndarray, a: list[np.ndarray],
                 b: list[np.ndarray], rounds: int, seed: int = 0) -> Interval | None:
    """AUC lift of runs `a` over runs `b` (their test scores) on the masked rows, paired over their resamples;
    None where the segment holds one class only."""
    y = labels[mask]
    if not a or not b or y.min(initial=1) == y.max(initial=0):
        return None
    boot = RowBootstrap(y, users[mask], rounds, seed)
    points = [[auc(y, s[mask]) for s in runs] for runs in (a, b)]
    draws = [[boot.metrics(s[mask])[0] for s in runs] for runs in (a, b)]
    return paired_lift(points[0], points[1], draws[0], draws[1])

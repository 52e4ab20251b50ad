"""The baselines a sceptical reviewer asks for: a click-rate prior with no model, and the vanilla model on more data.

Click-rate prior (`ctr_*`): a row of day D is scored by its user's positive rate over *every* scenario on the days
before D, shrunk toward the global rate of those days by `m` pseudo-rows, (positives + m * global) / (rows + m);
the same for its item; and their blend on the logit scale, alpha * logit(user) + (1 - alpha) * logit(item). Its
history ends before the test window, so it holds no test-window label (no model of the study sees one). Much of
"transfer" on a small tab can be cross-scenario click propensity that a model trained on the tab's own rows cannot
see; this prior measures how much. The strengths and alpha are chosen per tab on its validation rows (the
chronological tail of the training days, the rows that early-stop the downstream models), never on test rows.
Days, not timestamps, bound the history: the feature store's daily snapshots see the same.

The production model (`prod`): `none_more_data` with the user's and the item's smoothed click rates as of the
row's day (`shrunk_rates` with the prior's strengths, over every scenario on earlier days) as two more numeric
fields: the strongest model a team without the LFM would ship.

More data (`none_more_data`): the vanilla model trained also on its tab's rows of every day before the downstream
window (the LFM's pretraining window), so that "transfer" is not confused with "more rows". It validates on
exactly the rows `none` validates on (`matching_valid_fraction`). Both are docs/domain.md section 8.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import pandas as pd

from bench.transfer.stats import auc
from lfm.config.schema import DataSchema, FeatureField, FieldKind

STRENGTHS = (1.0, 3.0, 10.0, 30.0, 100.0)  # pseudo-rows of the global rate
ALPHAS = tuple(round(a, 1) for a in np.linspace(0.0, 1.0, 11))  # weight of the user's logit in the blend
NO_HISTORY_RATE = 0.5  # a day with no earlier rows at all: no information, logit 0


RATE_FIELDS = ("user_click_rate", "item_click_rate")  # prod's two extra numeric fields


class PriorKind(str, Enum):
    user = "ctr_user"
    item = "ctr_item"
    blend = "ctr_prior"


@dataclass(frozen=True)
class PriorRows:
    """The rows to score: their user key, item key and day (numpy datetime64[D])."""

    users: np.ndarray
    items: np.ndarray
    days: np.ndarray


@dataclass(frozen=True)
class PriorFit:
    """The parameters chosen on validation rows, and each kind's validation AUC with them."""

    user_strength: float
    item_strength: float
    alpha: float
    valid_auc: dict[str, float]

    def alpha_of(self, kind: PriorKind) -> float:
        return {PriorKind.user: 1.0, PriorKind.item: 0.0}.get(kind, self.alpha)


def shrunk_rates(history: pd.DataFrame, keys: np.ndarray, days: np.ndarray, strength: float) -> np.ndarray:
    """Per (key, day): the key's positive rate on days before `day`, shrunk toward the global rate of those days.

    `history`: one row per (key, ds) with `positives` and `rows` over every scenario (keys as in `keys`).
    """
    h = history.assign(key=history["key"].astype(str), ds=_days(history["ds"])).sort_values(["ds", "key"])
    per_key = h.assign(pos=h.groupby("key")["positives"].cumsum(), n=h.groupby("key")["rows"].cumsum())
    per_day = h.groupby("ds")[["positives", "rows"]].sum().cumsum().reset_index()
    q = pd.DataFrame({"key": np.asarray(keys).astype(str), "ds": _days(days), "i": np.arange(len(keys))})
    q = q.sort_values("ds", kind="stable")
    q = pd.merge_asof(q, per_key[["ds", "key", "pos", "n"]], on="ds", by="key", allow_exact_matches=False)
    q = pd.merge_asof(q, per_day, on="ds", allow_exact_matches=False)  # strictly earlier days only
    seen = q["rows"].fillna(0).to_numpy(np.float64)
    glob = np.where(seen > 0, q["positives"].fillna(0).to_numpy(np.float64) / np.maximum(seen, 1), NO_HISTORY_RATE)
    rate = (q["pos"].fillna(0).to_numpy(np.float64) + strength * glob) / (q["n"].fillna(0).to_numpy(np.float64)
                                                                          + strength)
    out = np.empty(len(q))
    out[q["i"].to_numpy()] = rate
    return out


def _days(values) -> np.ndarray:
    return pd.to_datetime(pd.Series(np.asarray(values))).to_numpy().astype("datetime64[D]").astype("datetime64[ns]")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def blend(user_rate: np.ndarray, item_rate: np.ndarray, alpha: float) -> np.ndarray:
    return alpha * _logit(user_rate) + (1 - alpha) * _logit(item_rate)


def fit_prior(rows: PriorRows, labels: np.ndarray, users: pd.DataFrame, items: pd.DataFrame) -> PriorFit:
    """Choose the user strength, the item strength (each alone, by validation AUC), then alpha for the blend."""
    def best_strength(history: pd.DataFrame, keys: np.ndarray) -> tuple[float, np.ndarray]:
        scored = {m: shrunk_rates(history, keys, rows.days, m) for m in STRENGTHS}
        m = max(STRENGTHS, key=lambda k: (auc(labels, scored[k]), -k))  # ties: the smaller strength
        return m, scored[m]

    mu, pu = best_strength(users, rows.users)
    mi, pi = best_strength(items, rows.items)
    alpha = max(ALPHAS, key=lambda a: (auc(labels, blend(pu, pi, a)), a))  # ties: more weight on the user
    return PriorFit(mu, mi, alpha, {PriorKind.user.value: auc(labels, pu), PriorKind.item.value: auc(labels, pi),
                                    PriorKind.blend.value: auc(labels, blend(pu, pi, alpha))})


def score_prior(kind: PriorKind, fit: PriorFit, rows: PriorRows, users: pd.DataFrame,
                items: pd.DataFrame) -> np.ndarray:
    pu = shrunk_rates(users, rows.users, rows.days, fit.user_strength)
    pi = shrunk_rates(items, rows.items, rows.days, fit.item_strength)
    return blend(pu, pi, fit.alpha_of(kind))


def matching_valid_fraction(window_rows: int, total_rows: int, valid_fraction: float) -> float:
    """The validation share that makes a run on `total_rows` (extra rows all earlier in time) validate on exactly
    the rows a run on the `window_rows` alone validates on (the trainer's chronological split rounds the cut)."""
    valid_rows = window_rows - int(round(window_rows * (1 - valid_fraction)))
    return valid_rows / total_rows


def click_rate_schema(schema: DataSchema) -> DataSchema:
    """The schema with the click rates as numeric fields (the user's on the user side, the item's on the item's)."""
    user, item = (FeatureField(name=n, kind=FieldKind.numeric) for n in RATE_FIELDS)
    return schema.model_copy(update={"user_fields": [*schema.user_fields, user],
                                     "item_fields": [*schema.item_fields, item]})


def with_click_rates(table, schema: DataSchema, fit: PriorFit, users: pd.DataFrame, items: pd.DataFrame):
    """`table` (an Arrow training or test set) with each row's user and item click rates as of its day."""
    import pyarrow as pa

    keys = [table.column(c).to_numpy(zero_copy_only=False) for c in (schema.user_key, schema.item_key, "ds")]
    rates = (shrunk_rates(users, keys[0], keys[2], fit.user_strength),
             shrunk_rates(items, keys[1], keys[2], fit.item_strength))
    for name, values in zip(RATE_FIELDS, rates):
        table = table.append_column(name, pa.array(values, pa.float64()))
    return table

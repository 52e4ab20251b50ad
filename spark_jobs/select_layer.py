"""Layer selection: which CR point's aggregated CR(u) transfers best, measured per model version.

For every named CR point, the decayed per-user state is chained over a warm-up and the probe days (all points in
one Spark pass per day, nothing published). A probe row is a sample of probe day D with the user's CR(u) as of
the end of D-1 (point-in-time: built only from events before D) and the label `refresh.probe_task`. Per target
scenario a logistic regression is fitted on the probe days before the last and scored by AUC on the last day;
a point's score is the test-row-weighted mean AUC over the scenarios with at least `refresh.probe_min_test_rows`
test rows and both classes (the same scenarios for every point, since every point sees the same rows).
The recorded point is the narrowest one whose score is within one paired-bootstrap standard error of the best
(points that transfer indistinguishably should be exported at the smallest width); it is recorded with
`Registry.set_selected_layer`, and `refresh` uses it unless told otherwise. Only points whose score (the point
estimate) is above chance, AUC 0.5, may be chosen: when none is, nothing is recorded and the selection fails
naming the scores (`NoProbeSignal`), since a layer picked among coin flips is noise.

Choosing the layer looks at labels, so the probe days must precede any window the layer is later judged on: a
`protect` window (a downstream study's train..test days) is never probed, explicit days that overlap it are
refused, and the default probe days are the held-out days before it (without one, the first two held-out days,
so that later days stay clean for a study; docs/domain.md section 8).
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lfm.config import LfmConfig
from lfm.contract import DayModel
from lfm.names import BadInput, parse_ds
from lakehouse.delta_io import read_table
from models.exports import spec_for
from models.registry import Registry
from spark_jobs.refresh.compute import DayState, cr_frame, day_samples
from spark_jobs.refresh.plan import RefreshPlan, plan_refresh

log = logging.getLogger(__name__)


@dataclass
class LayerSelection:
    model_version: str
    selected: str
    scores: dict[str, float | None]  # point -> weighted mean AUC over the scored scenarios
    table: list[dict]  # one row per (point, scenario): n_train, n_test, positives, auc
    probe_days: list[dt.date]
    warmup_days: list[dt.date]
    task: str
    best: str = ""  # highest weighted AUC; `selected` is the narrowest point within one SE of it
    gap_se: dict[str, float] | None = None  # paired-bootstrap SE of (best - point)

    def markdown(self) -> str:
        """Points as rows, scenarios as columns (AUC), plus the weighted mean that picks the layer."""
        scen = sorted({r["scenario"] for r in self.table if r["auc"] is not None}, key=lambda v: (len(v), v))
        n_test = {r["scenario"]: r["n_test"] for r in self.table}
        head = ("| point | width | " + " | ".join(f"scenario {s} (n={n_test[s]})" for s in scen)
                + " | weighted mean | best - point (SE) |")
        lines = [head, "|" + "---|" * (len(scen) + 4)]
        for point in tower_order(self.scores):
            score = self.scores[point]
            rows = {r["scenario"]: r for r in self.table if r["layer"] == point}
            width = next(iter(rows.values()))["width"] if rows else "-"
            cells = [f"{rows[s]['auc']:.4f}" if s in rows and rows[s]["auc"] is not None else "-" for s in scen]
            mark = " **(selected)**" if point == self.selected else ""
            mean = f"{score:.4f}" if score is not None else "-"
            best = self.scores.get(self.best)
            gap = (f"{best - score:+.4f} ({self.gap_se[point]:.4f})" if self.gap_se and point in self.gap_se
                   and score is not None and best is not None else "-")
            lines.append(f"| {point}{mark} | {width} | " + " | ".join(cells) + f" | {mean} | {gap} |")
        return "\n".join(lines)


def recorded_selection(card) -> LayerSelection:
    """The selection `select_layer` recorded on a model card (for printing it again without recomputing)."""
    t = card.probe_table
    if not card.selected_cr_layer or not isinstance(t, dict) or "rows" not in t:
        raise BadInput(f"model {card.model_version} has no recorded layer selection: run `lfm select-layer`")
    return LayerSelection(card.model_version, card.selected_cr_layer, dict(t["scores"]), list(t["rows"]),
                          [parse_ds(d) for d in t["probe_days"]], [parse_ds(d) for d in t["warmup_days"]],
                          t["task"], t.get("best", card.selected_cr_layer), t.get("gap_se") or None)


def event_days(spark: SparkSession, cfg: LfmConfig) -> list[dt.date]:
    rows = read_table(spark, cfg.table_path("events")).select("ds").distinct().collect()
    return sorted(r["ds"] for r in rows)


DEFAULT_PROBE_DAYS = 2  # without a protected window: the fewest a probe needs (fit on one day, score the next)

Window = tuple[dt.date, dt.date]


class ProbeOverlap(BadInput):
    """Probe days that overlap the protected window: the layer choice would look at the days it is judged on."""


def trained_days(card) -> list[dt.date]:
    """The days a model trained or early-stopped on, from its card."""
    used = [parse_ds(d) for split in ("train", "valid") for d in card.metrics.get("days", {}).get(split, [])]
    if not used:
        raise BadInput(f"model {card.model_version} does not record its training days: pass --days FIRST..LAST "
                       "(held-out days, at least two)")
    return used


def default_probe_days(used: list[dt.date], available: list[dt.date], protect: Window | None = None) -> list[dt.date]:
    """Days with events after every day the model trained or validated on, and before the protected window."""
    held_out = [d for d in available if d > max(used)]
    if protect is None:
        return held_out[:DEFAULT_PROBE_DAYS]
    return [d for d in held_out if d < protect[0]]


def check_protected(days: list[dt.date], protect: Window | None) -> None:
    """Refuse probe days inside the protected window (first..last, inclusive)."""
    if protect is None:
        return
    first, last = protect
    if last < first:
        raise BadInput(f"bad protected window {first}..{last}: FIRST must not be after LAST")
    inside = [d for d in days if first <= d <= last]
    if inside:
        raise ProbeOverlap(f"probe days {[d.isoformat() for d in inside]} fall in the protected window "
                           f"{first}..{last}: probe on days before {first} (or drop --protect if no study uses "
                           "those days)")


def tower_order(points) -> list[str]:
    """CR point names in mixing-tower order (embed, cross1.., fm, dnn1..), whatever order they are listed in."""
    stages = {"embed": 0, "cross": 1, "fm": 2, "dnn": 3}

    def key(name: str):
        m = re.fullmatch(r"([a-z_]+?)(\d*)", name)
        base, num = (m.group(1), int(m.group(2) or 0)) if m else (name, 0)
        return (stages.get(base, 4), num, name)

    return sorted(points, key=key)


def _chain_days(spark: SparkSession, cfg: LfmConfig, card, model_dir: str, days: list[dt.date], warmup: int,
                points: tuple[str, ...], run_id: str):
    """Yield (D, CR(u) frame as of the end of D-1) for every probe day D; all points in one pass per day."""
    s = cfg.schema
    prev: DayState | None = None
    first = days[0] - dt.timedelta(days=warmup)
    chain = [first + dt.timedelta(days=i) for i in range((days[-1] - first).days)]  # through the day before last
    for i, day in enumerate(chain):
        plan: RefreshPlan = plan_refresh(spark, cfg, spec_for(cfg, card, points[-1]),
                                         DayModel(card.model_version, model_dir), day,
                                         cold_start=(i == 0), run_id=run_id, state_in_memory=True,
                                         chain_end=dt.date.max)
        out = cr_frame(spark, cfg, plan, day_samples(spark, cfg, plan), prev, points=points).drop("__finite")
        out = out.localCheckpoint(eager=True)
        last_ts = F.timestamp_millis("t_last").alias("last_ts")
        user = out.where(F.col("ukey").isNotNull())
        prev = DayState(day, user.select("point", F.col("ukey").alias(s.user_key), "state", last_ts),
                        out.where(F.col("ikey").isNotNull()).select("point", F.col("ikey").alias(s.item_key),
                                                                    "state", last_ts))
        log.info("select-layer: CR state of %s computed for %d points", day, len(points))
        nxt = day + dt.timedelta(days=1)
        if nxt in days:
            yield nxt, user.select("point", F.col("ukey").alias(s.user_key), "cr")


def _probe_rows(spark: SparkSession, cfg: LfmConfig, day: dt.date, cr_u: DataFrame, task: str) -> pd.DataFrame:
    """Samples of `day` (user, scenario, label) with every point's CR(u) as of the day before; new users drop out."""
    from spark_jobs.samples import samples

    s = cfg.schema
    sm = samples(spark, cfg, [day]).select(s.user_key, F.col(s.scenario).cast("string").alias("scenario"),
                                           (F.coalesce(F.col(task), F.lit(0)) > 0).cast("int").alias("label"))
    users = sm.select(s.user_key).distinct()
    feats = cr_u.join(users, on=s.user_key, how="left_semi").toPandas()
    labels = sm.toPandas()
    labels["day"] = day
    labels["row"] = np.arange(len(labels))  # aligns test rows across points
    return labels.merge(feats, on=s.user_key, how="inner")


@dataclass
class ProbeScores:
    scores: dict[str, float | None]  # point -> test-row-weighted mean AUC over the scored scenarios
    table: list[dict]
    preds: dict[str, dict[str, np.ndarray]]  # point -> scenario -> test predictions (rows aligned across points)
    labels: dict[str, np.ndarray]  # scenario -> test labels


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC by rank sums (ties averaged); NaN when one class is missing."""
    from scipy.stats import rankdata

    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    return float((rankdata(p)[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def score_points(rows: pd.DataFrame, points: list[str], test_day: dt.date, min_test_rows: int,
                 seed: int = 0) -> ProbeScores:
    """Per point and scenario: logistic probe trained before `test_day`, AUC on `test_day`.

    L2-regularised (C=0.1) on standardised features: a probe with a few hundred rows per small scenario and up
    to a few hundred dimensions must not fit noise; lbfgs may stop at its iteration cap on separable small
    scenarios, which changes nothing material for a ranking probe.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table, scores, preds, labels = [], {}, {}, {}
    for point in points:
        sub = rows[rows["point"] == point].sort_values("row")
        weighted, total = 0.0, 0
        preds[point] = {}
        for scen, grp in sorted(sub.groupby("scenario"), key=lambda kv: (len(kv[0]), kv[0])):
            train, test = grp[grp["day"] < test_day], grp[grp["day"] == test_day]
            row = {"layer": point, "scenario": scen, "n_train": len(train), "n_test": len(test),
                   "positives": int(test["label"].sum()), "width": len(sub["cr"].iloc[0]), "auc": None}
            usable = (len(test) >= min_test_rows and train["label"].nunique() == 2 and test["label"].nunique() == 2)
            if usable:
                model = make_pipeline(StandardScaler(),
                                      LogisticRegression(C=0.1, max_iter=1000, random_state=seed))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(np.stack(train["cr"].to_numpy()), train["label"].to_numpy())
                p = model.predict_proba(np.stack(test["cr"].to_numpy()))[:, 1]
                y = test["label"].to_numpy()
                row["auc"] = round(_auc(y, p), 6)
                preds[point][scen], labels[scen] = p, y
                weighted += row["auc"] * len(test)
                total += len(test)
            table.append(row)
        scores[point] = round(weighted / total, 6) if total else None
    return ProbeScores(scores, table, preds, labels)


def probe_shortfall(table: list[dict], min_test_rows: int, test_day: dt.date) -> str:
    """Why no CR point could be scored: the largest scenario's counts, which rows count, and what to change."""
    top = max(table, key=lambda r: r["n_test"], default=None)
    seen = "" if top is None else (f" (the largest, scenario {top['scenario']!r}, has {top['n_test']} test rows, "
                                   f"{top['positives']} positive, and {top['n_train']} training rows)")
    return (f"no scenario has {min_test_rows}+ test rows with both classes on {test_day}{seen}. Only rows of users "
            "with a CR state count: a user needs events on an earlier day of the chain (the warm-up days or an "
            "earlier probe day), so users without earlier events drop out. For a small data set: more warm-up days "
            "(--warmup-days), more or other probe days (--days), or lower refresh.probe_min_test_rows in lfm.yaml "
            "(at least 10); or skip select-layer (refresh then exports the last CR point)")


CHANCE_AUC = 0.5  # a probe at or below it ranks no better than a coin: its point carries no signal for the task


class NoProbeSignal(BadInput):
    """No CR point's probe beats chance: a layer recorded from these scores would be chosen by noise."""


def with_signal(scores: dict[str, float | None]) -> dict[str, float]:
    """The points a selection may choose: a probe AUC (the point estimate) above chance."""
    return {p: v for p, v in scores.items() if v is not None and v > CHANCE_AUC}


def require_signal(scores: dict[str, float | None], task: str, test_day: dt.date, model_version: str) -> None:
    """Refuse a selection where no point beats chance, naming the scores and what to try."""
    if with_signal(scores):
        return
    listed = ", ".join(f"{p} {v:.4f}" for p, v in scores.items() if v is not None)
    raise NoProbeSignal(f"no CR point's probe beats chance (AUC > {CHANCE_AUC}) for {task} on {test_day}: "
                        f"{listed}; nothing recorded for model {model_version} (refresh keeps the recorded layer, "
                        "else the last CR point). Probe other or more days (--days), a longer warm-up "
                        "(--warmup-days) or another label (refresh.probe_task); if no day shows signal, the model's "
                        f"CR(u) does not carry {task} (see `lfm models show {model_version}`)")


def bootstrap_gap_se(ps: ProbeScores, best: str, rounds: int, seed: int = 0) -> dict[str, float]:
    """Standard error of (score of `best` - score of each point), resampling test rows per scenario (paired).

    The same resampled rows score every point, so the SE measures whether two points really differ on these
    rows, not how noisy each AUC is alone (docs/domain.md section 5: test-row noise dominates on small scenarios).
    """
    rng = np.random.default_rng(seed)
    scen = list(ps.labels)
    weights = np.array([len(ps.labels[s]) for s in scen], dtype=np.float64)
    gaps = {p: [] for p in ps.preds if ps.scores.get(p) is not None}
    for _ in range(rounds):
        idx = {s: rng.integers(0, len(ps.labels[s]), len(ps.labels[s])) for s in scen}

        def score(point: str) -> float:
            aucs = np.array([_auc(ps.labels[s][idx[s]], ps.preds[point][s][idx[s]]) for s in scen])
            ok = np.isfinite(aucs)
            return float((aucs[ok] * weights[ok]).sum() / weights[ok].sum())

        b = score(best)
        for p in gaps:
            gaps[p].append(b - score(p) if p != best else 0.0)
    return {p: float(np.std(g, ddof=1)) if len(g) > 1 else 0.0 for p, g in gaps.items()}


def choose(scores: dict[str, float | None], widths: dict[str, int], gap_se: dict[str, float],
           points: tuple[str, ...]) -> str:
    """The narrowest point above chance whose score is within one (paired) SE of the best; ties: higher score,
    earlier point.

    Points that transfer indistinguishably well should be exported at the smallest width: storage, serving
    and every downstream adapter scale with it (the paper's production choice, the last MLP layer, is narrow).
    """
    scored = with_signal(scores)  # a point at or below chance is never chosen, even within one SE of the best
    if not scored:
        raise NoProbeSignal(f"no CR point's probe beats chance: {scores}")
    best = max(scored, key=lambda p: (scored[p], -points.index(p)))
    near = [p for p, v in scored.items() if scored[best] - v <= gap_se.get(p, 0.0)]
    return min(near, key=lambda p: (widths[p], -scored[p], points.index(p)))


def select_layer(spark: SparkSession, cfg: LfmConfig, model_version: str | None = None,
                 days: list[dt.date] | None = None, warmup_days: int = 2, record: bool = True,
                 protect: Window | None = None) -> LayerSelection:
    """Score every CR point of a model by its CR(u)'s probe AUC on held-out days; record the best. Raises
    `NoProbeSignal` (nothing recorded) when no point's probe beats chance.

    `protect`: a window (first, last) no probe day may touch; the default days end before it.
    """
    days = sorted({parse_ds(d) for d in days}) if days else None
    if days:
        check_protected(days, protect)  # before any work: a refused choice costs nothing
    reg = Registry(cfg)
    card = reg.resolve(model_version)
    model_dir = str(reg.path(card.model_version))
    available = event_days(spark, cfg)
    days = days or default_probe_days(trained_days(card), available, protect)
    missing = [d for d in days if d not in available]
    if len(days) < 2 or missing:
        before = f" before the protected window {protect[0]}..{protect[1]}" if protect else ""
        raise BadInput(f"layer selection needs at least two probe days with events{before} (got "
                       f"{[d.isoformat() for d in days]}, without events: {missing}); the lakehouse has "
                       f"{available[0] if available else '-'}..{available[-1] if available else '-'}: pass --days "
                       "FIRST..LAST, or train the model on fewer days")
    warm = [d for d in (days[0] - dt.timedelta(days=i) for i in range(warmup_days, 0, -1)) if d in available]
    warmup = len(warm)
    if warm and warm != [days[0] - dt.timedelta(days=i) for i in range(warmup, 0, -1)]:
        raise BadInput(f"warm-up days {warm} are not consecutive; pass a smaller --warmup-days")
    points = tuple(tower_order(card.cr_points))
    task = cfg.refresh.probe_task or cfg.schema.tasks[0]
    if task not in cfg.schema.tasks:
        raise BadInput(f"refresh.probe_task {task!r} is not one of schema.tasks {cfg.schema.tasks}")
    run_id = "select-" + uuid.uuid4().hex[:8]
    parts = [_probe_rows(spark, cfg, day, cr_u, task)
             for day, cr_u in _chain_days(spark, cfg, card, model_dir, days, warmup, points, run_id)]
    rows = pd.concat(parts, ignore_index=True)
    rows["row"] = rows["row"] + rows["day"].map({d: i << 32 for i, d in enumerate(days)}).astype(np.int64)
    ps = score_points(rows, list(points), days[-1], cfg.refresh.probe_min_test_rows)
    scored = {p: v for p, v in ps.scores.items() if v is not None}
    if not scored:
        raise BadInput(probe_shortfall(ps.table, cfg.refresh.probe_min_test_rows, days[-1]))
    require_signal(ps.scores, task, days[-1], card.model_version)  # before anything is recorded
    scored = with_signal(ps.scores)
    best = max(scored, key=lambda p: (scored[p], -points.index(p)))
    gap_se = bootstrap_gap_se(ps, best, cfg.refresh.probe_bootstrap_rounds) \
        if cfg.refresh.probe_bootstrap_rounds > 1 else {}
    selected = choose(ps.scores, dict(card.cr_points), gap_se, points)
    result = LayerSelection(card.model_version, selected, ps.scores, ps.table, days, warm, task, best, gap_se)
    if record:
        Registry(cfg).set_selected_layer(card.model_version, selected, {
            "task": task, "probe_days": [d.isoformat() for d in days], "warmup_days": [d.isoformat() for d in warm],
            "scores": ps.scores, "best": best, "gap_se": gap_se,
            "protected": [d.isoformat() for d in protect] if protect else None,
            "rule": "narrowest point within one paired-bootstrap SE of the best", "rows": ps.table})
    log.info("select-layer %s: %s (best %s, scores %s)", card.model_version, selected, best, ps.scores)
    return result

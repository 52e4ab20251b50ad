"""The report's cells: runs grouped by (tab, variant, LFM option), their lifts with paired intervals.

A cell pools every run of a model on a tab: all downstream seeds and, for a transfer variant, all LFM seeds of its
option. Within each bootstrap resample the runs of a cell are averaged first, then two cells subtracted
(`stats.paired_lift`): the interval is the test-row noise of the lift, with seed noise averaged in. The spread
over LFM seeds is a separate question (a different source of variance), answered per seed in `seed_spread`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.transfer.baselines import PriorKind
from bench.transfer.plan import FROZEN, PROD, PROD_WINDOW
from bench.transfer.runs import CONTROL
from bench.transfer.stats import Interval, RowBootstrap, auc, gauc, paired_lift
from models.training.variants import TransferVariant

NONE, MORE, LINEAR, PLAIN = TransferVariant.none.value, "none_more_data", TransferVariant.ur_linear.value, "plain"
IIM_CONTROL = TransferVariant.iim_random.value
METRICS = ("auc", "gauc")


@dataclass
class Run:
    """One record with its metrics on the full test rows and on every resample."""

    rec: dict
    auc: float
    gauc: float
    boot: dict[str, np.ndarray]  # metric -> (rounds,)


@dataclass(frozen=True)
class EvalRows:
    """A tab's canonical test rows: labels, user codes for GAUC, and the segments' masks (bench.transfer.segments)."""

    labels: np.ndarray
    users: np.ndarray
    segments: dict[str, np.ndarray] = field(default_factory=dict)


class Evidence:
    """Every run scored on its tab's resamples; lifts between any two cells."""

    def __init__(self, records: list[dict], rows: dict[str, EvalRows],
                 scores: Callable[[str], tuple[np.ndarray, np.ndarray]], rounds: int, seed: int = 0):
        self.rows, self.rounds, self.seed, self.scores = rows, rounds, seed, scores
        boots = {tab: RowBootstrap(r.labels, r.users, rounds, seed + i) for i, (tab, r) in enumerate(rows.items())}
        self.runs: list[Run] = []
        for rec in records:
            labels, s = scores(rec["scores"])
            ref = rows[rec["tab"]].labels
            if len(labels) != len(ref) or not np.array_equal(labels, ref):
                raise ValueError(f"run {rec['scores']} scored other test rows than its tab's reference set")
            boot_auc, boot_gauc = boots[rec["tab"]].metrics(s)
            self.runs.append(Run(rec, auc(ref, s), gauc(rows[rec["tab"]].users, ref, s),
                                 {"auc": boot_auc, "gauc": boot_gauc}))

    def cell(self, tab: str, variant: str, option: str, lfm_seed: int | None = None, sweep: bool = False,
             layer: str | None = None) -> list[Run]:
        return [r for r in self.runs if r.rec["tab"] == tab and r.rec["variant"] == variant
                and r.rec["option"] == option and bool(r.rec.get("sweep")) == sweep
                and (lfm_seed is None or r.rec["lfm_seed"] == lfm_seed)
                and (layer is None or r.rec["cr_layer"] == layer)]

    @staticmethod
    def lift(a: list[Run], b: list[Run], metric: str = "auc") -> Interval | None:
        if not a or not b:
            return None
        return paired_lift([getattr(r, metric) for r in a], [getattr(r, metric) for r in b],
                           [r.boot[metric] for r in a], [r.boot[metric] for r in b])


def references(variant: str, kind: str, option: str) -> dict[str, tuple[str, str]]:
    """What a cell is compared with: column name -> (variant, option) of the reference cell."""
    refs = {"none": (NONE, CONTROL), "ur_linear": (LINEAR, option),
            "ctr_prior": (PriorKind.blend.value, CONTROL), "none_more_data": (MORE, CONTROL), "prod": (PROD, CONTROL),
            "prod_window": (PROD_WINDOW, CONTROL)}
    if kind == TransferVariant.iim.value:
        refs["own control"] = (IIM_CONTROL, CONTROL)
    if option not in (PLAIN, CONTROL):
        refs["plain LFM"] = (variant, PLAIN)
    return refs


def summarise(ev: Evidence, tabs: tuple[str, ...]) -> pd.DataFrame:
    """One row per (tab, variant, option): mean metrics, and each lift with its interval (None where n/a)."""
    rows = []
    keys = list(dict.fromkeys((r.rec["tab"], r.rec["variant"], r.rec["option"]) for r in ev.runs
                              if not r.rec.get("sweep")))
    for tab, variant, option in sorted(keys, key=lambda k: tabs.index(k[0])):
        runs = ev.cell(tab, variant, option)
        row = {"tab": tab, "variant": variant, "option": option, "runs": len(runs),
               "lfm_seeds": len({r.rec["lfm_seed"] for r in runs if r.rec["lfm_seed"] is not None}),
               "auc": np.mean([r.auc for r in runs]), "gauc": np.nanmean([r.gauc for r in runs]),
               "valid_auc": np.mean([r.rec["valid_auc"] for r in runs]),
               "epochs": np.mean([r.rec["epochs"] for r in runs]),
               "capped": sum(not r.rec["converged"] for r in runs),
               "seconds": np.mean([r.rec["seconds"] for r in runs])}
        for name, (ref_variant, ref_option) in references(variant, runs[0].rec["kind"], option).items():
            ref = ev.cell(tab, ref_variant, ref_option)
            same = (ref_variant, ref_option) == (variant, option)
            row[f"vs {name}"] = None if same else ev.lift(runs, ref)
            if name == "none":
                row["gauc vs none"] = None if same else ev.lift(runs, ref, "gauc")
        rows.append(row)
    return pd.DataFrame(rows)


def seed_spread(ev: Evidence, tabs: tuple[str, ...], lfm_seeds: tuple[int, ...]) -> pd.DataFrame:
    """Per (tab, plain transfer variant): the lift over `none` of each LFM seed alone, and their spread (empty
    with fewer than two LFM seeds)."""
    rows = []
    variants = list(dict.fromkeys(r.rec["variant"] for r in ev.runs if r.rec["option"] == PLAIN
                                  and not r.rec.get("sweep")))
    for tab in tabs:
        base = ev.cell(tab, NONE, CONTROL)
        for variant in variants:
            lifts = {s: ev.lift(ev.cell(tab, variant, PLAIN, lfm_seed=s), base) for s in lfm_seeds}
            points = [x.estimate for x in lifts.values() if x is not None]
            if len(points) > 1:
                rows.append({"tab": tab, "variant": variant, **{f"lfm seed {s}": x for s, x in lifts.items()},
                             "sd": float(np.std(points, ddof=1)), "range": float(max(points) - min(points))})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Verdict:
    tab: str
    best: str  # the transfer variant with the highest mean validation AUC (chosen without test rows)
    vs_prior: Interval | None
    vs_more: Interval | None
    vs_prod: Interval | None = None  # the strongest no-transfer model
    prod_vectors: dict[str, tuple[Interval | None, Interval | None]] = field(default_factory=dict)  # prod+X: vs
    # prod (its own, longer days) and vs prod_window (the same rows)
    vs_frozen: dict[str, Interval | None] = field(default_factory=dict)  # lineage variant over the frozen LFM's


def verdicts(summary: pd.DataFrame, tabs: tuple[str, ...]) -> list[Verdict]:
    out = []
    for tab in tabs:
        s = summary[(summary.tab == tab) & (summary.option == PLAIN)]
        if s.empty:
            continue
        best = s.loc[s.valid_auc.idxmax()]
        prod = {r.variant: (r.get("vs prod"), r.get("vs prod_window")) for _, r in s.iterrows()
                if r.variant.startswith(PROD + "+")}
        frozen = summary[(summary.tab == tab) & (summary.option == FROZEN)]
        out.append(Verdict(tab, best.variant, best["vs ctr_prior"], best["vs none_more_data"], best.get("vs prod"),
                           prod, {r.variant: r.get("vs plain LFM") for _, r in frozen.iterrows()}))
    return out


def best_variants(summary: pd.DataFrame) -> dict[str, str]:
    """Per tab, the lineage transfer variant with the highest mean validation AUC."""
    s = summary[summary.option == PLAIN]
    return {tab: g.loc[g.valid_auc.idxmax()].variant for tab, g in s.groupby("tab")}


def segment_comparisons(best: str) -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    """(column, model A, model B) lifted on each segment; `best` is the tab's best transfer variant."""
    with_vectors, cr = f"{PROD}+{TransferVariant.ur_ir_cr_mlp.value}", TransferVariant.ur_ir_cr_mlp.value
    return [("best vs none", (best, PLAIN), (NONE, CONTROL)),
            ("best vs prod", (best, PLAIN), (PROD, CONTROL)),
            (f"{with_vectors} vs {PROD_WINDOW}", (with_vectors, PLAIN), (PROD_WINDOW, CONTROL)),
            (f"{cr}: lineage vs frozen", (cr, PLAIN), (cr, FROZEN))]


def segment_table(ev: Evidence, summary: pd.DataFrame, tabs: tuple[str, ...], rounds: int) -> pd.DataFrame:
    """One row per (tab, segment): its test rows, their click share, and each comparison's lift with its paired
    interval on the segment's rows alone."""
    from bench.transfer.segments import segment_lift

    best = best_variants(summary)
    rows = []
    for tab in tabs:
        if tab not in best:
            continue
        er = ev.rows[tab]
        for name, mask in er.segments.items():
            row = {"tab": tab, "segment": name, "rows": int(mask.sum()),
                   "positives": float(er.labels[mask].mean()) if mask.any() else float("nan")}
            for column, a, b in segment_comparisons(best[tab]):
                scores = [[ev.scores(r.rec["scores"])[1] for r in ev.cell(tab, *cell)] for cell in (a, b)]
                row[column] = segment_lift(er.labels, er.users, mask, *scores, rounds, ev.seed)
            row["best"] = best[tab]
            rows.append(row)
    return pd.DataFrame(rows)


def sweep_table(ev: Evidence, tabs: tuple[str, ...], version: str, selected: str) -> pd.DataFrame | None:
    """cr_gate test AUC per (CR layer, tab) of the reference LFM: every layer at the same seeds."""
    runs = [r for r in ev.runs if r.rec["variant"] == "cr_gate" and r.rec["model_version"] == version]
    layers = list(dict.fromkeys(r.rec["cr_layer"] for r in runs))
    if len(layers) < 2:
        return None
    table = {layer: {tab: (np.mean([r.auc for r in cell]), len(cell)) if (cell := [
        r for r in runs if r.rec["cr_layer"] == layer and r.rec["tab"] == tab]) else None for tab in tabs}
        for layer in layers}
    frame = pd.DataFrame(table).T
    frame.index = [f"{layer} (exported)" if layer == selected else layer for layer in frame.index]
    return frame

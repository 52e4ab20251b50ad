"""The report's PNG: per tab, every model's lift over `none` with its paired interval (and each LFM seed alone)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.transfer.runs import CONTROL
from bench.transfer.stats import CONFIDENCE, Interval
from bench.transfer.summary import PLAIN

COLORS = {CONTROL: "tab:grey", PLAIN: "tab:blue", "stem": "tab:orange", "crocodile": "tab:green"}


def plot(path: Path, summary: pd.DataFrame, spread: pd.DataFrame, tabs: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tabs = tuple(t for t in tabs if t in set(summary.tab))
    fig, axes = plt.subplots(len(tabs), 1, figsize=(11, 2.8 * len(tabs)), squeeze=False)
    for ax, tab in zip(axes[:, 0], tabs):
        s = summary[(summary.tab == tab) & summary["vs none"].notna()].reset_index(drop=True)
        x = np.arange(len(s))
        est = np.array([v.estimate for v in s["vs none"]])
        err = np.array([[v.estimate - v.low, v.high - v.estimate] for v in s["vs none"]]).T
        colors = [COLORS.get(o, "black") for o in s.option]
        ax.errorbar(x, est, yerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
        ax.scatter(x, est, c=colors, zorder=3)
        seeds = [c for c in spread.columns if c.startswith("lfm seed")] if len(spread) else []
        for i, row in s.iterrows():
            hit = spread[(spread.tab == tab) & (spread.variant == row.variant)] if seeds and row.option == PLAIN \
                else spread.iloc[:0]
            points = [hit[c].iloc[0].estimate for c in seeds if len(hit) and isinstance(hit[c].iloc[0], Interval)]
            ax.scatter([i + 0.18] * len(points), points, marker="x", s=14, c="tab:blue", zorder=2)
        ax.axhline(0.0, color="grey", ls="--", lw=0.8)
        labels = [v if o in (PLAIN, CONTROL) else f"{v}\n({o})" for v, o in zip(s.variant, s.option)]
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"tab {tab}\nAUC lift over none")
    fig.suptitle(f"Test AUC lift over no transfer, {CONFIDENCE:.0%} paired bootstrap interval over test rows\n"
                 "grey: baselines, blue: plain LFM (x: each of its seeds alone), orange: STEM, green: Crocodile",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

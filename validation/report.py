"""The PNG of one gate run: per embedding table, its singular spectrum and its drift histogram.

People look at it to see *how* a day went wrong (a spectrum falling off a cliff is collapse; a drift histogram
piled near 0 is shuffled or random vectors), which a pass/fail line cannot show.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the gate runs in batch jobs

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from validation.metrics import DayMetrics  # noqa: E402


def write_report(path: Path, title: str, tables: dict[str, tuple[bool, DayMetrics]], centered: bool) -> Path:
    """Draw one row per table (spectrum | drift histogram) and save it as `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(tables), 2, figsize=(11, 2.8 * len(tables)), squeeze=False)
    for row, (name, (passed, m)) in zip(axes, tables.items()):
        verdict = "passed" if passed else "QUARANTINED"
        _spectrum(row[0], name, verdict, m, centered)
        _histogram(row[1], name, m, centered)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.3 / len(tables), top=1 - 0.35 / len(tables), wspace=0.25,
                        hspace=0.75)  # fixed margins: tight_layout measures every text box before drawing
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _spectrum(ax, name: str, verdict: str, m: DayMetrics, centered: bool) -> None:
    what = "centred vectors" if centered else "vectors"
    ax.set_title(f"{name} ({verdict}): singular spectrum of {m.sample_rows} {what}", fontsize=9)
    if m.spectrum is None or not len(m.spectrum):
        ax.text(0.5, 0.5, "no valid vectors", ha="center", va="center", transform=ax.transAxes)
        return
    s = np.clip(m.spectrum, 1e-12, None)
    ax.semilogy(np.arange(1, len(s) + 1), s, marker=".")
    ax.set_xlabel("index")
    ax.set_ylabel("sigma / sigma_max")
    ax.text(0.98, 0.95, f"erank {m.effective_rank:.2f}\nIA {m.information_abundance:.2f}", ha="right", va="top",
            transform=ax.transAxes, fontsize=8)


def _histogram(ax, name: str, m: DayMetrics, centered: bool) -> None:
    what = "centred cosine" if centered else "cosine"
    ax.set_title(f"{name}: {what} to D-1 over {m.drift_pairs} shared entities", fontsize=9)
    if not m.drift_pairs:
        ax.text(0.5, 0.5, "no D-1 partition to compare", ha="center", va="center", transform=ax.transAxes)
        return
    bins = len(m.drift_histogram)
    edges = np.linspace(-1, 1, bins + 1)
    ax.bar(edges[:-1], m.drift_histogram, width=2 / bins, align="edge")
    ax.set_xlim(-1, 1)
    ax.set_xlabel("cosine")
    ax.set_ylabel("entities")
    ax.text(0.02, 0.95, f"mean {m.drift_mean_cosine:.3f}\nmoved {m.drift_moved_share:.3f}", ha="left", va="top",
            transform=ax.transAxes, fontsize=8)

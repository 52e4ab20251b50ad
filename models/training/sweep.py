"""Comparison of the LFM's embedding variants: every (variant, seed) pretrained on the same tables, one table."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from lfm.config import LfmConfig
from models.training.pretrain import Progress, pretrain


def sweep(train: pa.Table, valid: pa.Table, test: pa.Table, cfg: LfmConfig, variants: list, seeds: list[int],
          progress: Progress | None = print) -> list[dict]:
    """Pretrain every (variant, seed) on the same tables; one record per run with its test rows and wall time."""
    runs = []
    for variant in variants:
        vcfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"embedding": variant})})
        for seed in seeds:
            result = pretrain(train, valid, vcfg, test=test, seed=seed, progress=progress)
            m = result.metrics
            runs.append({"variant": getattr(variant, "value", str(variant)), "seed": seed,
                         "seconds": m["train_seconds"], "cpu_seconds": m["train_cpu_seconds"],
                         "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"], "test": m["test"]})
    return runs


SUMMARY_SCENARIOS = 5  # the table's columns: this many scenarios with the most test rows, then all pooled


def largest_scenarios(runs: list[dict], task: str, k: int = SUMMARY_SCENARIOS) -> list[str]:
    """The `k` scenarios with the most test rows of `task` (the same rows score every run), largest first."""
    rows = {r["scenario"]: r["n"] for run in runs[:1] for r in run["test"]
            if r["task"] == task and r["scenario"] != "*"}
    return sorted(rows, key=lambda s: (-rows[s], len(s), s))[:k]


def sweep_markdown(runs: list[dict], task: str, scenarios: list[str] | None = None) -> str:
    """Per variant: mean +- std over seeds of test AUC of `task` on each scenario (default: the largest ones by
    test rows, `largest_scenarios`), plus wall time per run."""
    scenarios = largest_scenarios(runs, task) if scenarios is None else scenarios

    def auc_of(run: dict, scen: str) -> float | None:
        return next((r["auc"] for r in run["test"] if r["task"] == task and r["scenario"] == scen), None)

    cols = [*scenarios, "*"]
    head = "| variant | seeds | " + " | ".join(f"scenario {c}" if c != "*" else "all scenarios" for c in cols) + \
           " | wall s / run | CPU s / run | epochs (best) |"
    lines = [head, "|" + "---|" * (len(cols) + 5)]
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rs = [r for r in runs if r["variant"] == variant]
        cells = []
        for c in cols:
            vals = [v for v in (auc_of(r, c) for r in rs) if v is not None]
            cells.append(f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.4f}" if vals else "-")
        secs, cpu = [r["seconds"] for r in rs], [r.get("cpu_seconds", np.nan) for r in rs]
        epochs = ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in rs)
        lines.append(f"| {variant} | {len(rs)} | " + " | ".join(cells)
                     + f" | {np.mean(secs):.1f} | {np.mean(cpu):.1f} | {epochs} |")
    lines += ["", f"Per run (test AUC of {task}):", "",
              "| variant | seed | " + " | ".join(f"scenario {c}" if c != "*" else "all" for c in cols) + " | wall s |",
              "|" + "---|" * (len(cols) + 3)]
    for r in runs:
        cells = [f"{v:.4f}" if (v := auc_of(r, c)) is not None else "-" for c in cols]
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join(cells) + f" | {r['seconds']:.1f} |")
    return "\n".join(lines)

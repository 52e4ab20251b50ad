"""The transfer report (issue 7): what each representation and each transfer granularity adds downstream.

One command, from a fresh lakehouse, through the platform's own functions end to end:
  ingest (spark_jobs.ingest) -> pretrain the LFM on the pretraining days and register it (models.training.pretrain,
  models.registry) -> backfill UR/IR/CR over the refresh days (spark_jobs.backfill, with the quality gate) ->
  register the Feast definitions (serving.register) -> per target tab, the point-in-time training and test
  sets of the pinned feature service (pipeline.downstream.training_sets -> serving.offline) -> every
  transfer variant x seed (models.training.transfer, early-stopped on validation AUC) -> optionally the CR layer
  sweep (backfill again per layer, re-register, train the CR-only gate) -> markdown + PNG + raw JSON.

Windows (defaults = issue 7 section 5):
- pretrain 2022-04-25..05-01: the LFM trains on 04-25..04-30 and early-stops on 05-01 (all tabs);
- refresh 05-01..05-08: day D's snapshot is stamped D+1 00:00, so the 05-01 export is what the 05-02 training rows
  see (refreshing only from 05-02 would leave the first training day without vectors); the CR state is warmed up
  over the pretraining days before 05-01, so CR(u) carries history from the first exported day;
- downstream train 05-02..05-06 (its chronologically last 20 % validates), test 05-07..05-08.
Statistics per (tab, variant) over seeds: mean and standard deviation of test AUC; lift over no transfer and
over UR linear (and over the variant's own control for IIM and retrieval), significant when |lift| > 2 standard
errors of the difference, SE = sqrt(s_a^2 / n_a + s_b^2 / n_b). A test-row bootstrap SE of the no-transfer AUC
per tab is printed beside it, because on the small tabs test-row noise can exceed seed noise (DOMAIN.md 5).

Run:  python -m bench.transfer_report --source ../shared/data/kuairand-pure --workdir bench/out/transfer
Quick (one seed, two tabs, no layer sweep):  add --quick
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing
import os
import re
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from lfm.config import LfmConfig, config_from_dict, load_config
from lfm.names import ds_range

log = logging.getLogger("lfm.transfer_report")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "kuairand-pure"
DEFAULT_TABS = ("0", "4", "6", "2", "1")
DEFAULT_SEEDS = 5
QUICK_TABS = 2
BOOTSTRAP_SAMPLES = 200
SIGNIFICANCE_SE = 2.0  # a lift counts when it exceeds this many standard errors of the difference

FEATURE_VARIANTS = ("none", "ur_linear", "ur_mlp", "ur_ir_mlp", "ur_ir_cr_gate", "ur_ir_cr_mlp", "cr_gate")
RETRIEVAL_VARIANTS = ("retrieval_scratch", "retrieval_ur", "retrieval_cr_user")


@dataclass(frozen=True)
class ReportSpec:
    source: Path
    workdir: Path
    pretrain_train: tuple[dt.date, ...]
    pretrain_valid: tuple[dt.date, ...]
    refresh: tuple[dt.date, ...]
    warmup_days: int
    train: tuple[dt.date, ...]
    test: tuple[dt.date, ...]
    tabs: tuple[str, ...]
    task: str
    seeds: tuple[int, ...]
    ks: tuple[int, ...] | None  # IIM depths; None = every depth 0..L
    layers: tuple[str, ...] | None  # CR layer sweep; None = the default pair (see sweep_layers), () = no sweep
    layer_seeds: tuple[int, ...]
    out_md: Path
    out_png: Path
    out_json: Path
    quick: bool = False
    max_epochs: int | None = None
    threads: int | None = None  # torch threads of the downstream runs (default: downstream.trainer.threads)
    jobs: int | None = None  # downstream runs trained side by side, one process each (None: see default_jobs)
    reuse: bool = False  # train on an already built workdir (after a timeout); the report says so
    partial: str | None = None  # rendered from an interrupted run's runs log (--from-runs): what is missing

    @property
    def runs_log(self) -> Path:
        """One JSON line per finished run, written as it finishes (nothing is lost to a timeout)."""
        return self.out_json.with_suffix(".runs.jsonl")

    @property
    def days_text(self) -> dict[str, str]:
        span = lambda d: f"{d[0]}..{d[-1]}" if d else "-"  # noqa: E731
        return {"pretrain (train)": span(self.pretrain_train), "pretrain (early stop)": span(self.pretrain_valid),
                "refresh": span(self.refresh) + (f" (CR state warmed up over {self.warmup_days} earlier days)"
                                                 if self.warmup_days else ""),
                "downstream train": span(self.train), "downstream test": span(self.test)}


@dataclass
class Timer:
    """Wall time per phase, in order."""

    phases: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        log.info("[%s] ...", name)
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t
            log.info("[%s] %.1fs", name, self.phases[name])

    finished: float | None = None  # a total read back from an earlier run's log

    @property
    def total(self) -> float:
        return self.finished if self.finished is not None else time.perf_counter() - self.t0

    @classmethod
    def from_log(cls, text: str) -> "Timer":
        """The phases an earlier run logged (`[phase] 12.3s` lines, each the phase's running total)."""
        phases: dict[str, float] = {}
        for name, seconds in re.findall(r"\[([^\]]+)\] ([0-9.]+)s$", text, flags=re.M):
            phases[name] = float(seconds)
        return cls(phases=phases, finished=sum(phases.values()))


# ---- the platform, end to end ----------------------------------------------------------------------------------

def workdir_config(base: LfmConfig, workdir: Path) -> LfmConfig:
    """`base` with every writable path under `workdir` (a fresh lakehouse, registry and Feast repo)."""
    workdir = workdir.resolve()  # absolute: relative config paths would resolve against the config's folder
    data = base.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    data.update(lakehouse=str(workdir / "lakehouse"))
    data["registry"] = {**data.get("registry", {}), "path": str(workdir / "registry")}
    data["feast"] = {**data.get("feast", {}), "repo_path": str(workdir / "feature_repo")}
    return config_from_dict(data, "<transfer report>", str(workdir))


def build_platform(spark, cfg: LfmConfig, spec: ReportSpec, timer: Timer) -> tuple[str, str]:
    """Ingest and pretrain + register the LFM; returns (model version, the CR layer the refresh will export)."""
    from models.registry import Registry
    from models.training.pretrain import pretrain
    from spark_jobs.ingest import ingest
    from spark_jobs.refresh import choose_layer
    from spark_jobs.samples import samples_arrow

    with timer.phase("ingest"):
        ingest(spark, cfg, spec.source)
    with timer.phase("pretrain"):
        train = samples_arrow(spark, cfg, list(spec.pretrain_train))
        valid = samples_arrow(spark, cfg, list(spec.pretrain_valid))
        result = pretrain(train, valid, cfg, progress=log.info)
        card = Registry(cfg).register(result.model, result.encoders, {
            **result.metrics, "days": {"train": [d.isoformat() for d in spec.pretrain_train],
                                       "valid": [d.isoformat() for d in spec.pretrain_valid]}})
    return card.model_version, choose_layer(card, None)


def refresh_and_register(spark, cfg: LfmConfig, spec: ReportSpec, version: str, layer: str, timer: Timer,
                         gated: bool = True) -> None:
    """Backfill the refresh days at `layer` and point the version's Feast CR views at that layer.

    `gated=False` for the layer sweep: those exports are measured, never served, and the gate would double the
    sweep's cost; the exported layer's backfill (the main pass, last) runs the quality gate on every day.
    """
    from serving.register import register
    from feature_repo.specs import specs_from_registry
    from models.registry import Registry
    from spark_jobs.backfill import backfill

    with timer.phase("backfill"):
        results = backfill(spark, cfg, spec.refresh[0], spec.refresh[-1], model_version=version, cr_layer=layer,
                           warmup_days=spec.warmup_days, cold_start=not spec.warmup_days, validate=gated)
    for r in results:
        if r.gate is not None:
            r.gate.raise_if_failed()  # a quarantined export must not feed the report
    with timer.phase("feast register"):
        Registry(cfg).set_selected_layer(version, layer)  # the Feast spec follows the registry's selection
        register(cfg, specs_from_registry(cfg, [version]), current=version)


def fetch_sets(spark, cfg: LfmConfig, spec: ReportSpec, version: str, timer: Timer) -> dict:
    from pipeline.downstream import training_sets

    sets = {}
    with timer.phase("training sets (Feast point-in-time)"):
        for tab in spec.tabs:
            sets[tab] = training_sets(spark, cfg, tab, list(spec.train), list(spec.test), model_version=version)
            log.info("tab %s: train %d / test %d rows", tab, sets[tab].train.num_rows, sets[tab].test.num_rows)
    return sets


def requests(spec: ReportSpec, depth: int) -> list:
    from models.training.variants import TransferRequest, TransferVariant

    ks = spec.ks if spec.ks is not None else tuple(range(depth + 1))
    ks = tuple(dict.fromkeys(k if k >= 0 else depth + 1 + k for k in ks))  # -1 = every interaction layer
    out = [TransferRequest(TransferVariant(v)) for v in FEATURE_VARIANTS]
    out += [TransferRequest(TransferVariant.iim, k=k) for k in ks if 0 <= k <= depth]
    out.append(TransferRequest(TransferVariant.iim_random))
    out += [TransferRequest(TransferVariant(v)) for v in RETRIEVAL_VARIANTS]
    return out


def run_variants(cfg: LfmConfig, spec: ReportSpec, sets: dict, reqs: list, seeds: tuple[int, ...], timer: Timer,
                 phase: str, layer: str, sink: list[dict]) -> None:
    """Train every request x seed on every tab; one record per run appended to `sink` (and logged).

    The runs are independent, so `spec.jobs` worker processes train them side by side (each with `threads` torch
    threads: on 2 cores two 1-thread runs finish about twice as many runs per minute as one 2-thread run, whose
    small matrices do not parallelise). The longest runs go first so the workers finish together; `sink` gets the
    records in (tab, request, seed) order whatever order they finished in.
    """
    from models.training.setup import DownstreamSetup

    overrides = {k: v for k, v in (("max_epochs", spec.max_epochs), ("threads", spec.threads)) if v}
    settings = DownstreamSetup.from_config(cfg, **overrides)
    jobs = [RunJob(tab, req, seed, bootstrap=req.variant.value == "none" and seed == seeds[0])
            for tab in sets for req in reqs for seed in seeds]
    done: dict[RunJob, dict] = {}
    with timer.phase(phase):
        if spec.jobs <= 1:
            worker = RunWorker(cfg, settings, spec.task, layer, sets)
            for job in jobs:
                done[job] = _finished(spec, job, worker.run(job))
        else:
            order = sorted(jobs, key=lambda j: -expected_cost(sets[j.tab], j.req))
            shared = save_sets(spec.workdir / "training_sets" / layer, sets)
            ctx = multiprocessing.get_context("spawn")  # the parent holds a JVM and torch's thread pools
            with ProcessPoolExecutor(spec.jobs, mp_context=ctx, initializer=_init_worker,
                                     initargs=(cfg, settings, spec.task, layer, shared)) as pool:
                futures = {pool.submit(_run_in_worker, job): job for job in order}
                for future in as_completed(futures):
                    done[futures[future]] = _finished(spec, futures[future], future.result())
    sink.extend(done[job] for job in jobs)


@dataclass(frozen=True)
class RunJob:
    """One downstream run of the report: a tab, a transfer request and a seed."""

    tab: str
    req: object  # models.training.variants.TransferRequest
    seed: int
    bootstrap: bool  # also estimate the test-row bootstrap SE (once per tab, on the no-transfer run)


class RunWorker:
    """Trains report runs on one process's copy of the training sets (the IIM source loaded once per tab)."""

    def __init__(self, cfg: LfmConfig, settings, task: str, layer: str, sets: dict):
        self.cfg, self.settings, self.task, self.layer, self.sets = cfg, settings, task, layer, sets
        self.iim: dict[str, object] = {}

    def run(self, job: RunJob) -> dict:
        from models.training.variants import Granularity
        from pipeline.downstream import iim_source, train_on_sets

        ts = self.sets[job.tab]
        module_level = job.req.variant.granularity is Granularity.module
        if module_level and job.tab not in self.iim:
            self.iim[job.tab] = iim_source(self.cfg, ts, None)
        iim = self.iim[job.tab] if module_level else None
        r = train_on_sets(self.cfg, ts, self.task, job.req, job.seed, self.settings, iim=iim)
        rec = record(job.tab, self.layer, r, job.req)
        if job.bootstrap:
            rec["bootstrap_se"] = bootstrap_se(r.test_labels, r.test_scores, job.seed)
        return rec


def _finished(spec: ReportSpec, job: RunJob, rec: dict) -> dict:
    with spec.runs_log.open("a") as fh:
        fh.write(json.dumps(rec, default=str) + "\n")
    log.info("tab %s %-18s seed %d: AUC %.4f (%d epochs%s, %.1fs)", job.tab, rec["variant"], job.seed,
             rec["test_auc"], rec["epochs"], "" if rec["converged"] else ", EPOCH CAP", rec["seconds"])
    return rec


def expected_cost(ts, req) -> float:
    """Relative run time for scheduling: training rows x the variant's weight (module-level and CR-only runs
    measured about 2.5x a feature-level run, the retrieval two-tower about 0.4x)."""
    from models.training.variants import Granularity

    weight = {Granularity.module: 2.5, Granularity.model: 0.4}.get(req.variant.granularity, 1.0)
    return ts.train.num_rows * (2.5 if req.variant.value == "cr_gate" else weight)


def save_sets(folder: Path, sets: dict) -> dict:
    """Each tab's training sets as Arrow IPC files the workers memory-map (written once, not pickled per run)."""
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    shared = {}
    for tab, ts in sets.items():
        paths = {}
        for part in ("train", "test"):
            table = getattr(ts, part)
            paths[part] = folder / f"tab{tab}.{part}.arrow"
            with pa.OSFile(str(paths[part]), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        shared[tab] = (paths, replace(ts, train=None, test=None))
    return shared


_WORKER: list[RunWorker] = []


def _init_worker(cfg: LfmConfig, settings, task: str, layer: str, shared: dict) -> None:
    import pyarrow as pa

    logging.basicConfig(level=logging.WARNING)
    sets = {}
    for tab, (paths, meta) in shared.items():
        parts = {part: pa.ipc.open_file(pa.memory_map(str(path))).read_all() for part, path in paths.items()}
        sets[tab] = replace(meta, **parts)
    _WORKER[:] = [RunWorker(cfg, settings, task, layer, sets)]


def _run_in_worker(job: RunJob) -> dict:
    return _WORKER[0].run(job)


def record(tab: str, layer: str, r, req) -> dict:
    return {"tab": tab, "variant": r.label, "granularity": req.variant.granularity.value, "seed": r.seed,
            "cr_layer": layer, "test_auc": r.test_auc, "valid_auc": r.fit.best_valid_auc,
            "best_epoch": r.fit.best_epoch, "epochs": r.fit.epochs, "converged": r.fit.converged,
            "seconds": r.fit.seconds, "rows": [r.train_rows, r.valid_rows, r.test_rows],
            "recall": {str(k): v for k, v in r.recall.items()}, "coverage": dict(r.vector_coverage)}


def bootstrap_se(labels: np.ndarray, scores: np.ndarray, seed: int) -> float:
    """Standard error of a test AUC from resampling the test rows (the noise of the test set itself)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = len(labels)
    values = []
    for _ in range(BOOTSTRAP_SAMPLES):
        idx = rng.integers(0, n, n)
        if labels[idx].min() != labels[idx].max():
            values.append(roc_auc_score(labels[idx], scores[idx]))
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def layer_sweep(spark, cfg: LfmConfig, spec: ReportSpec, version: str, main_layer: str, timer: Timer,
                sink: list[dict]) -> None:
    """CR-only gate per CR extraction layer other than the main one (whose runs come from the main pass).

    Runs before the main pass: each layer is a backfill of the CR tables at that layer, and the main pass's
    backfill comes last, so the lakehouse and Feast end at the exported layer.
    """
    from models.registry import Registry
    from models.training.variants import TransferRequest, TransferVariant

    points = list(Registry(cfg).card(version).cr_points)
    for layer in sweep_layers(spec.layers, points, main_layer):
        refresh_and_register(spark, cfg, spec, version, layer, timer, gated=False)
        sets = fetch_sets(spark, cfg, spec, version, timer)
        run_variants(cfg, spec, sets, [TransferRequest(TransferVariant.cr_gate)], spec.layer_seeds, timer,
                     "train (CR layer sweep)", layer, sink)


def sweep_layers(chosen: tuple[str, ...] | None, points: list[str], main_layer: str) -> list[str]:
    """The layers swept besides the exported one. Each costs one more backfill of every refresh day (about as
    long as all the downstream training on 2 cores), so the default is a pair that brackets the question: the
    embedding output (`embed`, no interaction at all) and the last cross layer; `--layers all` sweeps them all."""
    if chosen is None:
        crosses = [p for p in points if p.startswith("cross")]
        chosen = tuple(dict.fromkeys([points[0], *(crosses[-1:] or points[1:2])]))
    elif chosen == ("all",):
        chosen = tuple(points)
    unknown = [p for p in chosen if p not in points]
    if unknown:
        raise SystemExit(f"--layers {list(unknown)} are not CR points of the model; choose from {points}")
    return [p for p in chosen if p != main_layer]


# ---- statistics and output -------------------------------------------------------------------------------------

CONTROL = {"retrieval_ur": "retrieval_scratch", "retrieval_cr_user": "retrieval_scratch"}


def control_of(variant: str) -> str | None:
    return "iim_random" if variant.startswith("iim_k") else CONTROL.get(variant)


def summarise(runs: pd.DataFrame, main_layer: str) -> pd.DataFrame:
    """One row per (tab, variant) of the main pass: mean/std/n AUC, lifts and their significance."""
    main = runs[runs.cr_layer == main_layer]
    g = main.groupby(["tab", "variant"], sort=False)
    s = g.agg(granularity=("granularity", "first"), n=("test_auc", "size"), auc=("test_auc", "mean"),
              std=("test_auc", "std"), epochs=("epochs", "mean"), capped=("converged", lambda c: int((~c).sum())),
              seconds=("seconds", "mean")).reset_index()
    tab_order = {t: i for i, t in enumerate(dict.fromkeys(main.tab))}
    variant_order = {v: i for i, v in enumerate(dict.fromkeys(main.variant))}
    s = s.sort_values(["tab", "variant"], key=lambda c: c.map(tab_order if c.name == "tab" else variant_order),
                      kind="stable").reset_index(drop=True)
    s["std"] = s["std"].fillna(0.0)
    s["se"] = s["std"] / np.sqrt(s["n"])
    for col in ("recall@20", "recall@100"):
        k = col.split("@")[1]
        s[col] = [np.mean([r.get(k, np.nan) for r in grp.recall]) if grp.granularity.iloc[0] == "model" else np.nan
                  for _, grp in g]
    index = s.set_index(["tab", "variant"])

    def lift(row, ref: str | None) -> tuple[float, bool | None]:
        if ref is None or (row.tab, ref) not in index.index or ref == row.variant:
            return np.nan, None
        b = index.loc[(row.tab, ref)]
        diff = row.auc - b.auc
        se = np.sqrt(row.se ** 2 + b.se ** 2)
        sig = bool(abs(diff) > SIGNIFICANCE_SE * se) if min(row.n, b.n) > 1 else None
        return diff, sig

    for name, ref in (("none", lambda v: "none"), ("ur_linear", lambda v: "ur_linear"), ("control", control_of)):
        pairs = [lift(r, ref(r.variant)) for r in s.itertuples()]
        s[f"lift_{name}"] = [p[0] for p in pairs]
        s[f"sig_{name}"] = [p[1] for p in pairs]
    return s


def _fmt_lift(x: float, sig: bool | None) -> str:
    if np.isnan(x):
        return ""
    mark = "" if sig is None else (" **\\***" if sig else "")
    return f"{x:+.4f}{mark}"


def markdown(spec: ReportSpec, summary: pd.DataFrame, runs: pd.DataFrame, version: str, layer: str,
             timer: Timer, command: str, cr_points: dict) -> str:
    lines = ["# Transfer report: what UR, IR, CR and each transfer granularity add downstream", ""]
    lines += [f"Command: `{command}`", "",
              f"Model version `{version}`, CR exported at layer `{layer}` (points {list(cr_points)}); task "
              f"`{spec.task}`; seeds {list(spec.seeds)}; tabs {list(spec.tabs)}"
              + (" — **quick mode** (one seed, two tabs, no layer sweep: not a measurement)" if spec.quick else "")
              + (f" — **partial**: {spec.partial}" if spec.partial else "")
              + (" — trained on a workdir built by an earlier run (--reuse-workdir): the wall time below "
                 "excludes ingest, pretraining and the backfill" if spec.reuse else ""),
              ""]
    lines += ["| window | days |", "|---|---|"] + [f"| {k} | {v} |" for k, v in spec.days_text.items()] + [""]
    lines += [f"Wall time: **{timer.total / 60:.1f} min** in all; "
              + ", ".join(f"{k} {v:.0f}s" for k, v in timer.phases.items())
              + (f" (downstream runs {spec.jobs} at a time, "
                 f"{spec.threads or 'downstream.trainer.threads'} torch thread(s) each)" if spec.jobs else ""),
              ""]
    boot = runs.dropna(subset=["bootstrap_se"]) if "bootstrap_se" in runs else runs.iloc[:0]
    rows = {}
    for tab, grp in summary.groupby("tab", sort=False):
        r = grp.set_index("variant")
        rows[tab] = r
    lines += ["## Test AUC by variant and tab (mean over seeds; lift over no transfer, \\* = beyond 2 SE)", ""]
    variants = list(dict.fromkeys(summary.variant))
    lines.append("| variant | " + " | ".join(f"tab {t}" for t in rows) + " |")
    lines.append("|---|" + "---|" * len(rows))
    for v in variants:
        cells = []
        for t, r in rows.items():
            if v not in r.index:
                cells.append("")
                continue
            x = r.loc[v]
            cells.append(f"{x.auc:.4f} ± {x['std']:.4f} {_fmt_lift(x.lift_none, x.sig_none)}".strip())
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    if len(boot):
        lines.append("| *test-row bootstrap SE of `none`* | "
                     + " | ".join(f"{boot[boot.tab == t].bootstrap_se.iloc[0]:.4f}" if (boot.tab == t).any() else ""
                                  for t in rows) + " |")
    lines += ["", "## Every variant in detail", "",
              "| tab | variant | level | n | AUC | std | lift vs none | lift vs UR linear | lift vs own control | "
              "recall@20 | recall@100 | epochs | capped | s/run |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, x in summary.iterrows():
        rec = lambda v: "" if pd.isna(v) else f"{v:.4f}"  # noqa: E731
        lines.append(f"| {x.tab} | {x.variant} | {x.granularity} | {x.n} | {x.auc:.4f} | {x['std']:.4f} | "
                     f"{_fmt_lift(x.lift_none, x.sig_none)} | {_fmt_lift(x.lift_ur_linear, x.sig_ur_linear)} | "
                     f"{_fmt_lift(x.lift_control, x.sig_control)} | {rec(x['recall@20'])} | {rec(x['recall@100'])} | "
                     f"{x.epochs:.1f} | {x.capped} | {x.seconds:.1f} |")
    capped = int(summary.capped.sum())
    lines += ["", f"Runs that hit the epoch cap instead of early stopping: {capped}"
              + (" — raise --max-epochs before reading those rows" if capped else " (every run early-stopped)."), ""]
    sweep = layer_table(runs)
    if sweep is not None:
        lines += ["## CR-only gate (`cr_gate`) test AUC by CR extraction layer", "",
                  "| layer | " + " | ".join(f"tab {t}" for t in sweep.columns) + " |",
                  "|---|" + "---|" * len(sweep.columns)]
        for layer_name, row in sweep.iterrows():
            lines.append(f"| {layer_name}{' (exported)' if layer_name == layer else ''} | "
                         + " | ".join("" if pd.isna(v) else f"{v:.4f}" for v in row) + " |")
        lines.append("")
    lines += ["Variants: `none` the scenario's own fields; `ur_linear` UR through one linear projection (SUM); "
              "`ur_mlp` UR through the MLP adapter; `ur_ir_mlp` + IR; `ur_ir_cr_mlp` + CR(u), CR(i) through MLP "
              "adapters; `ur_ir_cr_gate` CR(u), CR(i) through sigmoid gates on the field embeddings instead; "
              "`cr_gate` the CR gates alone; `iim_k{k}` the Isomorphic Interaction Module with the LFM's input "
              "layers and first k interaction layers (cross, then DNN), `iim_random` its random-init control; "
              "`retrieval_*` the two-tower (frozen IR item side; user side from scratch ids, UR, or CR(u)).", ""]
    lines += [f"PNG: `{spec.out_png.name}`; raw runs: `{spec.out_json.name}`.", ""]
    return "\n".join(lines)


def layer_table(runs: pd.DataFrame) -> pd.DataFrame | None:
    sweep = runs[runs.variant == "cr_gate"]
    if sweep.cr_layer.nunique() < 2:
        return None
    return sweep.groupby(["cr_layer", "tab"], sort=False).test_auc.mean().unstack("tab")


def plot(spec: ReportSpec, summary: pd.DataFrame, runs: pd.DataFrame, cr_points: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tabs = list(dict.fromkeys(summary.tab))
    sweep = layer_table(runs)
    panels = len(tabs) + 1
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.6 * panels), squeeze=False)
    for ax, tab in zip(axes[:, 0], tabs):
        s = summary[summary.tab == tab]
        x = np.arange(len(s))
        colors = {"none": "grey", "feature": "tab:blue", "module": "tab:orange", "model": "tab:green"}
        ax.errorbar(x, s.auc, yerr=SIGNIFICANCE_SE * s.se, fmt="none", ecolor="black", capsize=2)
        ax.scatter(x, s.auc, c=[colors[g] for g in s.granularity], zorder=3)
        base = s[s.variant == "none"].auc
        if len(base):
            ax.axhline(float(base.iloc[0]), color="grey", ls="--", lw=0.8)
        ax.set_xticks(x, s.variant, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"tab {tab}\ntest AUC")
    ax = axes[-1, 0]
    if sweep is not None:
        order = [p for p in cr_points if p in sweep.index]
        for tab in sweep.columns:
            ax.plot(order, sweep.loc[order, tab], marker="o", label=f"tab {tab}")
        ax.set_ylabel("cr_gate test AUC")
        ax.set_xlabel("CR extraction layer (mixing-tower order)")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no CR layer sweep in this run", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle("Downstream test AUC by variant (error bars: 2 SE over seeds; dashed: no transfer)", fontsize=10)
    fig.tight_layout()
    spec.out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(spec.out_png, dpi=110)
    plt.close(fig)


# ---- entry points ----------------------------------------------------------------------------------------------

@dataclass
class ReportResult:
    summary: pd.DataFrame
    runs: pd.DataFrame
    model_version: str
    cr_layer: str
    seconds: float
    markdown: str


def default_jobs(cfg: LfmConfig, spec: ReportSpec) -> int:
    """As many concurrent runs as the cores this process may use hold runs of `threads` torch threads each."""
    return max(1, len(os.sched_getaffinity(0)) // (spec.threads or cfg.downstream.trainer.threads))


def run_report(spec: ReportSpec, base: LfmConfig, command: str = "") -> ReportResult:
    from models.iim import interaction_layers
    from models.registry import Registry
    from spark_jobs.session import get_spark

    spec.workdir.mkdir(parents=True, exist_ok=True)
    built = (spec.workdir / "lakehouse").exists() and any((spec.workdir / "lakehouse").iterdir())
    if built and not spec.reuse:
        raise SystemExit(f"{spec.workdir}/lakehouse is not empty: the report runs from a fresh lakehouse; "
                         "pass a new --workdir (or --reuse-workdir to train on what is built there)")
    if spec.reuse and not built:
        raise SystemExit(f"--reuse-workdir: nothing is built in {spec.workdir}; run without it first")
    cfg = workdir_config(base, spec.workdir)
    spec = replace(spec, jobs=spec.jobs or default_jobs(cfg, spec))
    spec.out_json.parent.mkdir(parents=True, exist_ok=True)
    spec.runs_log.unlink(missing_ok=True)
    timer = Timer()
    spark = get_spark(cfg)
    if spec.reuse:  # the version and layer the earlier run built, backfilled and registered
        from spark_jobs.refresh import choose_layer

        card = Registry(cfg).latest()
        version, layer = card.model_version, choose_layer(card, None)
    else:
        version, layer = build_platform(spark, cfg, spec, timer)
    card = Registry(cfg).card(version)
    depth = len(interaction_layers(Registry(cfg).load(version).model))
    runs: list[dict] = []
    if spec.layers != ():
        layer_sweep(spark, cfg, spec, version, layer, timer, runs)
    if not spec.reuse or spec.layers != ():
        refresh_and_register(spark, cfg, spec, version, layer, timer)
    sets = fetch_sets(spark, cfg, spec, version, timer)
    run_variants(cfg, spec, sets, requests(spec, depth), spec.seeds, timer, "train (all variants)", layer, runs)
    frame = pd.DataFrame(runs)
    if "bootstrap_se" not in frame:
        frame["bootstrap_se"] = np.nan
    summary = summarise(frame, layer)
    text = markdown(spec, summary, frame, version, layer, timer, command, card.cr_points)
    plot(spec, summary, frame, card.cr_points)
    spec.out_md.parent.mkdir(parents=True, exist_ok=True)
    spec.out_md.write_text(text)
    spec.out_json.write_text(json.dumps({"spec": {k: str(v) for k, v in asdict(spec).items()},
                                         "model_version": version, "cr_layer": layer,
                                         "phases_s": timer.phases, "total_s": timer.total,
                                         "runs": runs}, indent=1, default=str))
    log.info("transfer report: %s, %s, %s in %.1f min", spec.out_md, spec.out_png, spec.out_json, timer.total / 60)
    return ReportResult(summary, frame, version, layer, timer.total, text)


def _days(value: str) -> tuple[dt.date, ...]:
    first, _, last = value.partition("..")
    return tuple(ds_range(first, last or first))


def parse_args(argv: list[str] | None = None) -> tuple[ReportSpec, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="base lfm.yaml (schema, model, training settings); paths go under --workdir")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="KuaiRand-layout folder")
    p.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "transfer",
                   help="fresh folder for the lakehouse, registry and Feast repo of this run")
    p.add_argument("--pretrain", default="2022-04-25..2022-04-30", help="LFM training days")
    p.add_argument("--pretrain-valid", default="2022-05-01", help="LFM early-stopping days")
    p.add_argument("--refresh", default="2022-05-01..2022-05-08", help="days exported (backfill)")
    p.add_argument("--warmup-days", type=int, default=6, help="CR state warm-up days before the first refresh day")
    p.add_argument("--train", default="2022-05-02..2022-05-06", help="downstream training days")
    p.add_argument("--test", default="2022-05-07..2022-05-08", help="downstream test days")
    p.add_argument("--tabs", default=",".join(DEFAULT_TABS))
    p.add_argument("--task", default="is_click")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds 0..N-1 per variant")
    p.add_argument("--ks", help="IIM depths, comma list; -1 = all L layers (default: every depth 0..L)")
    p.add_argument("--layers", help="CR layers to sweep besides the exported one: comma list, 'all', or 'none' "
                                    "(default: embed and the last cross layer; each layer costs one backfill)")
    p.add_argument("--layer-seeds", type=int, default=2, help="seeds per layer in the CR layer sweep")
    p.add_argument("--max-epochs", type=int, help="override the downstream epoch cap")
    p.add_argument("--threads", type=int, help="torch threads per downstream run (default: "
                                               "downstream.trainer.threads); on a machine shared with other jobs "
                                               "1 thread is far faster than 2")
    p.add_argument("--jobs", type=int, help="downstream runs trained side by side, one process each (default: the "
                                            "cores this process may use / --threads)")
    p.add_argument("--reuse-workdir", action="store_true",
                   help="skip ingest/pretrain/backfill and train on what an earlier run built in --workdir")
    p.add_argument("--quick", action="store_true", help="one seed, two tabs, IIM k in {0, L}, no layer sweep")
    p.add_argument("--from-runs", type=Path, metavar="LOG",
                   help="render the report from the runs log (.runs.jsonl) and console log (LOG) of an interrupted "
                        "run in --workdir, marked partial; trains nothing")
    p.add_argument("--out", type=Path, help="markdown output (default docs/transfer_report.md; quick mode: "
                                            "bench/out/transfer_report_quick.md, so it never replaces the report)")
    a = p.parse_args(argv)
    tabs = tuple(t.strip() for t in a.tabs.split(",") if t.strip())
    layers = None if a.layers is None else (() if a.layers == "none" else tuple(a.layers.split(",")))
    ks = tuple(int(k) for k in a.ks.split(",")) if a.ks else None
    seeds = tuple(range(a.seeds))
    out = (a.out or (REPO / "bench" / "out" / "transfer_report_quick.md" if a.quick else
                     REPO / "docs" / "transfer_report.md")).resolve()
    if a.quick:
        tabs, seeds, layers, ks = tabs[:QUICK_TABS], seeds[:1], (), ks or (0, -1)
    spec = ReportSpec(source=a.source.resolve(), workdir=a.workdir.resolve(), pretrain_train=_days(a.pretrain),
                      pretrain_valid=_days(a.pretrain_valid), refresh=_days(a.refresh), warmup_days=a.warmup_days,
                      train=_days(a.train), test=_days(a.test), tabs=tabs, task=a.task, seeds=seeds, ks=ks,
                      layers=layers, layer_seeds=tuple(range(max(1, min(a.layer_seeds, len(seeds))))),
                      out_md=out, out_png=out.with_suffix(".png"), out_json=out.with_suffix(".json"),
                      quick=a.quick, max_epochs=a.max_epochs, threads=a.threads, reuse=a.reuse_workdir,
                      jobs=a.jobs)
    return spec, a


def render_from_runs(spec: ReportSpec, base: LfmConfig, command: str, console_log: Path) -> str:
    """The report of an interrupted run: every finished run from its runs log, phases from its console log."""
    from models.registry import Registry

    frame = pd.DataFrame([json.loads(line) for line in spec.runs_log.read_text().splitlines() if line.strip()])
    if "bootstrap_se" not in frame:
        frame["bootstrap_se"] = np.nan
    main_runs = frame[frame.variant != "cr_gate"]
    if main_runs.empty:
        raise SystemExit(f"{spec.runs_log} holds no run of the main pass yet: nothing to report")
    layer = main_runs.cr_layer.mode().iloc[0]
    main_runs = frame[frame.cr_layer == layer]  # the main pass, its cr_gate runs included
    done = tuple(dict.fromkeys(main_runs.tab))
    missing = [t for t in spec.tabs if t not in done]
    counts = main_runs.groupby("tab", sort=False).size()
    runs_per_tab = ", ".join(f"tab {t}: {n} runs" for t, n in counts.items())
    spec = replace(spec, tabs=done, partial=(
        f"the run was stopped before it finished; tabs reported {list(done)} ({runs_per_tab}), not run: "
        f"{missing or 'none'}; a tab with fewer runs than the others stopped mid-way"))
    card = Registry(workdir_config(base, spec.workdir)).latest()
    summary = summarise(frame, layer)
    text = markdown(spec, summary, frame, card.model_version, layer, Timer.from_log(console_log.read_text()),
                    command, card.cr_points)
    plot(spec, summary, frame, card.cr_points)
    spec.out_md.parent.mkdir(parents=True, exist_ok=True)
    spec.out_md.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in ("lfm", "models", "spark_jobs", "feature_repo"):  # our progress; libraries stay at WARNING
        logging.getLogger(name).setLevel(logging.INFO)
    spec, a = parse_args(argv)
    base = load_config(a.config)
    command = "python -m bench.transfer_report " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    if a.from_runs:
        print(render_from_runs(spec, base, command, a.from_runs))
        return 0
    result = run_report(spec, base, command)
    print(result.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The downstream runs: one per (tab, variant, LFM, seed), trained by `pipeline.downstream.train_on_sets`.

Runs are independent, so `jobs` worker processes train them side by side (each with `threads` torch threads: on
2 cores two 1-thread runs finish about twice as many runs per minute as one 2-thread run, whose small matrices do
not parallelise), longest first so the workers finish together. Each finished run is appended to the workdir's
runs log and its per-row test scores saved beside it as it finishes: nothing is lost to a timeout, and a
resumed report (`--resume`) trains only what is missing.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.transfer.prep import TabSets
from lfm.config import LfmConfig

log = logging.getLogger("lfm.transfer_report")

CONTROL = "control"  # the option of runs that read no LFM weights or vectors (one per tab, not per LFM)


@dataclass(frozen=True)
class Job:
    """One downstream run."""

    tab: str
    variant: str  # the label in tables (TransferRequest.label, or none_more_data)
    request: object  # models.training.variants.TransferRequest (None for the click-rate prior)
    sets: str  # key of the training sets it trains on
    seed: int
    option: str  # the LFM option it transfers from, or CONTROL
    lfm_seed: int | None  # None for controls
    model_version: str  # the version whose feature service (or checkpoint) supplied its rows
    layer: str  # the exported CR layer of that version
    valid_fraction: float | None = None  # overrides the trainer's (none_more_data validates on none's rows)
    sweep: bool = False  # a run of the downstream CR layer sweep only (kept out of the main cells)
    checkpoint: str | None = None  # module-level runs: the LFM version to start from (None: the sets' version)
    click_rates: bool = False  # the sets carry the smoothed click rates, read as two more numeric fields

    @property
    def kind(self) -> str:
        """The variant family (TransferVariant value, e.g. `iim` for every depth) or the prior's kind."""
        return self.request.variant.value if self.request is not None else self.variant

    @property
    def key(self) -> str:
        """A file-safe identity: what a resumed report matches finished runs by."""
        lfm = "x" if self.lfm_seed is None else str(self.lfm_seed)
        return f"tab{self.tab}.{self.variant}.{self.option}.lfm{lfm}.seed{self.seed}.{self.layer}"


def record(job: Job, result, seconds: float) -> dict:
    """The JSON record of one run (its scores live in the scores file under `scores`)."""
    fit = result.fit
    return {"tab": job.tab, "variant": job.variant, "option": job.option, "lfm_seed": job.lfm_seed,
            "seed": job.seed, "model_version": job.model_version, "cr_layer": job.layer,
            "test_auc": result.test_auc, "valid_auc": fit.best_valid_auc, "best_epoch": fit.best_epoch,
            "epochs": fit.epochs, "converged": fit.converged, "seconds": round(seconds, 2),
            "rows": [result.train_rows, result.valid_rows, result.test_rows],
            "coverage": dict(result.vector_coverage), "scores": job.key}


class SetStore:
    """Training sets as Arrow IPC files the workers memory-map (written once, never pickled per run)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.index: dict[tuple[str, str], tuple[dict[str, Path], object]] = {}

    def put(self, key: str, tab: str, sets: TabSets) -> None:
        paths = {}
        (self.folder / key).mkdir(parents=True, exist_ok=True)
        for part in ("train", "test"):
            table = getattr(sets, part)
            paths[part] = self.folder / key / f"tab{tab}.{part}.arrow"
            with pa.OSFile(str(paths[part]), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        self.index[(key, tab)] = (paths, sets.meta)


class Worker:
    """Trains jobs on one process's view of the sets (tables mapped and IIM sources loaded once per set)."""

    def __init__(self, cfg: LfmConfig, settings, task: str, index: dict):
        from bench.transfer.baselines import click_rate_schema

        self.cfg, self.settings, self.task, self.index = cfg, settings, task, index
        self.with_rates = cfg.model_copy(update={"schema_": click_rate_schema(cfg.schema)})  # the field's name
        self.loaded: dict[tuple[str, str], object] = {}
        self.iim: dict[tuple, object] = {}

    def sets(self, key: str, tab: str):
        if (key, tab) not in self.loaded:
            paths, meta = self.index[(key, tab)]
            parts = {p: pa.ipc.open_file(pa.memory_map(str(path))).read_all() for p, path in paths.items()}
            self.loaded[(key, tab)] = replace(meta, **parts)
        return self.loaded[(key, tab)]

    def run(self, job: Job) -> tuple[dict, np.ndarray, np.ndarray]:
        """(record, test labels, test scores as float32) of one run."""
        from models.training.variants import Granularity
        from pipeline.downstream import iim_source, train_on_sets

        ts = self.sets(job.sets, job.tab)
        iim = None
        if job.request.variant.granularity is Granularity.module:
            source = (job.sets, job.tab, job.checkpoint)
            if source not in self.iim:
                self.iim[source] = iim_source(self.cfg, ts, job.checkpoint)
            iim = self.iim[source]
        settings = self.settings
        if job.valid_fraction is not None:
            settings = replace(settings, trainer=settings.trainer.model_copy(
                update={"valid_fraction": job.valid_fraction}))
        t0 = time.perf_counter()
        cfg = self.with_rates if job.click_rates else self.cfg
        r = train_on_sets(cfg, ts, self.task, job.request, job.seed, settings, iim=iim)
        return record(job, r, time.perf_counter() - t0), r.test_labels, r.test_scores.astype(np.float32)


_WORKER: list[Worker] = []


def _init_worker(cfg: LfmConfig, settings, task: str, index: dict) -> None:
    logging.basicConfig(level=logging.WARNING)
    _WORKER[:] = [Worker(cfg, settings, task, index)]


def _run_in_worker(job: Job):
    return _WORKER[0].run(job)


class RunLog:
    """Finished runs of this workdir: one JSON line each, and their test labels and scores as .npy files."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "runs.jsonl"
        (folder / "scores").mkdir(parents=True, exist_ok=True)

    def done(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        recs = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return {r["scores"]: r for r in recs if (self.folder / "scores" / f"{r['scores']}.npy").exists()}

    def add(self, rec: dict, labels: np.ndarray, scores: np.ndarray) -> None:
        np.save(self.folder / "scores" / f"{rec['scores']}.labels.npy", labels.astype(np.int8))
        np.save(self.folder / "scores" / f"{rec['scores']}.npy", scores)  # last: its presence marks the run done
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")

    def scores(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(test labels, test scores) of a finished run."""
        return (np.load(self.folder / "scores" / f"{key}.labels.npy"), np.load(self.folder / "scores" / f"{key}.npy"))


def expected_cost(size: int, job: Job) -> float:
    """Relative run time for scheduling: training-set size x the variant's weight (module-level runs measured about
    2.5x a feature-level run)."""
    from models.training.variants import Granularity

    return size * (2.5 if job.request.variant.granularity is Granularity.module else 1.0)


def train_all(cfg: LfmConfig, settings, task: str, store: SetStore, jobs: list[Job], workers: int, runlog: RunLog,
              on_done: Callable[[dict], None] = lambda rec: None) -> None:
    """Train every job not yet in `runlog`; each finished run is logged (and reported) as it finishes."""
    done = runlog.done()
    todo = [j for j in jobs if j.key not in done]
    if len(todo) < len(jobs):
        log.info("%d of %d runs are already in %s (resumed)", len(jobs) - len(todo), len(jobs), runlog.path)

    def finished(rec: dict, labels: np.ndarray, scores: np.ndarray) -> None:
        runlog.add(rec, labels, scores)
        log.info("tab %s %-16s %-9s lfm %s seed %d: AUC %.4f (%d epochs%s, %.1fs)", rec["tab"], rec["variant"],
                 rec["option"], rec["lfm_seed"], rec["seed"], rec["test_auc"], rec["epochs"],
                 "" if rec["converged"] else ", EPOCH CAP", rec["seconds"])
        on_done(rec)

    if workers <= 1:
        worker = Worker(cfg, settings, task, store.index)
        for job in todo:
            finished(*worker.run(job))
        return
    rows = {k: paths["train"].stat().st_size for k, (paths, _) in store.index.items()}
    order = sorted(todo, key=lambda j: -expected_cost(rows[(j.sets, j.tab)], j))
    ctx = multiprocessing.get_context("spawn")  # the parent holds a JVM and torch's thread pools
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(cfg, settings, task, store.index)) as pool:
        futures = [pool.submit(_run_in_worker, job) for job in order]
        for future in as_completed(futures):
            finished(*future.result())


def score_priors(cfg: LfmConfig, task: str, sets: dict[str, TabSets], valid_fraction: float, history,
                 runlog: RunLog, version: str, layer: str) -> tuple[list[Job], dict[str, dict]]:
    """The click-rate prior per tab: parameters on the validation rows, scores of the test rows (no training)."""
    from dataclasses import asdict

    from bench.transfer.baselines import PriorKind, PriorRows, fit_prior, score_prior
    from models.encoders import encode_labels
    from models.training.encoding import EVENT_TIMESTAMP, chronological_split

    users, items = history
    s = cfg.schema
    done = runlog.done()
    jobs, fits = [], {}

    def rows_of(table: pa.Table, keep: np.ndarray | None = None) -> PriorRows:
        cols = [table.column(c).to_numpy() for c in (s.user_key, s.item_key, "ds")]
        return PriorRows(*(c if keep is None else c[keep] for c in cols))

    def labels_of(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        labels, mask = encode_labels(table, [task])
        return labels[:, 0].numpy(), mask[:, 0].numpy() > 0

    for tab, ts in sets.items():
        _, valid = chronological_split(ts.train, valid_fraction, EVENT_TIMESTAMP)
        labels, keep = labels_of(valid)
        fit = fit_prior(rows_of(valid, keep), labels[keep], users, items)
        fits[tab] = asdict(fit)
        test_labels, _ = labels_of(ts.test)  # the test rows carry a label each (prep.fetch)
        for kind in PriorKind:
            job = Job(tab, kind.value, None, version, 0, CONTROL, None, version, layer)
            jobs.append(job)
            if job.key in done:
                continue
            t0 = time.perf_counter()
            scores = score_prior(kind, fit, rows_of(ts.test), users, items)
            runlog.add({"tab": tab, "variant": kind.value, "option": CONTROL, "lfm_seed": None, "seed": 0,
                        "model_version": version, "cr_layer": layer, "test_auc": None,
                        "valid_auc": fit.valid_auc[kind.value], "best_epoch": 0, "epochs": 0, "converged": True,
                        "seconds": round(time.perf_counter() - t0, 2),
                        "rows": [0, int(keep.sum()), len(test_labels)], "coverage": {},
                        "params": {"user_strength": fit.user_strength, "item_strength": fit.item_strength,
                                   "alpha": fit.alpha_of(kind)}, "scores": job.key},
                       test_labels, scores.astype(np.float32))
    return jobs, fits

"""The transfer study, end to end: what `python -m bench.transfer_report` runs (`--help` lists the subsets).

From a fresh workdir, through the platform's own code paths (`bench.transfer.prep`): ingest, then per LFM (plain
seeds 0..N-1, STEM and Crocodile) pretrain + register, select-layer on days before the downstream window (one probe
per LFM option), run-daily over the export days (refresh, the quality gate, publish, materialize); per tab the Feast
point-in-time training sets of released days; the downstream runs (`bench.transfer.runs`), the click-rate prior and
the more-data baseline (`bench.transfer.baselines`); paired bootstrap intervals (`bench.transfer.stats`,
`bench.transfer.summary`); the markdown, PNG, JSON records and per-row scores (`bench.transfer.tables`,
`bench.transfer.plot`). The package: spec (what runs), plan (which runs), prep (data through the pipeline), runs,
baselines, stats, summary, tables, plot, timing, report (this module).
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.transfer.baselines import matching_valid_fraction
from bench.transfer.plan import MORE, NO_LAYER, Lfm, StudyError, main_jobs, sweep_jobs, sweep_layers, tabs_of
from bench.transfer.plot import plot
from bench.transfer.prep import (PretrainRows, TabSets, adopt, check_same_rows, export, export_id, exported, fetch,
                                 pretrain_upstream, prior_history, select, window_of, workdir_config)
from bench.transfer.runs import Job, RunLog, SetStore, score_priors, train_all
from bench.transfer.spec import ReportSpec, parse_args
from bench.transfer.summary import EvalRows, Evidence, seed_spread, summarise, sweep_table, verdicts
from bench.transfer.tables import Context, markdown
from bench.transfer.timing import Timer
from lfm.config import LfmConfig, load_config
from lfm.errors import LfmError

log = logging.getLogger("lfm.transfer_report")


@dataclass
class ReportResult:
    summary: pd.DataFrame
    records: list[dict]
    versions: dict[str, str]  # LFM label -> model version
    seconds: float
    markdown: str


@dataclass
class Study:
    """What one invocation works with: the spec, the workdir's config, Spark, the timer and the run stores."""

    spec: ReportSpec
    cfg: LfmConfig
    spark: object
    timer: Timer
    store: SetStore
    runlog: RunLog
    settings: object  # models.training.setup.DownstreamSetup

    @property
    def keys(self) -> list[str]:
        """The columns that pair test rows across sets."""
        s = self.cfg.schema
        return [s.user_key, s.item_key, "event_timestamp", self.spec.task]


def default_jobs(spec: ReportSpec) -> int:
    """As many concurrent runs as the cores this process may use hold runs of `threads` torch threads each."""
    return max(1, len(os.sched_getaffinity(0)) // spec.threads)


def open_study(spec: ReportSpec, base: LfmConfig) -> Study:
    """Refuse a used workdir unless resuming; the workdir's config, Spark, and the downstream settings."""
    from models.training.setup import DownstreamSetup
    from spark_jobs.session import get_spark

    lake = spec.workdir / "lakehouse"
    if lake.exists() and any(lake.iterdir()) and not spec.resume:
        raise StudyError(f"{lake} is not empty: the report runs from a fresh workdir; pass a new --workdir, or "
                         "--resume to reuse what an earlier run built there")
    cfg = workdir_config(base, spec.workdir)
    overrides = {k: v for k, v in (("max_epochs", spec.max_epochs), ("threads", spec.threads)) if v}  # None: keep
    settings = DownstreamSetup.from_config(cfg, **overrides)
    return Study(spec, cfg, get_spark(cfg), Timer(spec.workdir / "phases.json", resume=spec.resume),
                 SetStore(spec.workdir / "sets"), RunLog(spec.workdir), settings)


def build_lfms(st: Study) -> tuple[list[Lfm], dict]:
    """Ingest, then pretrain every LFM and select its CR layer on days before the downstream window."""
    from models.iim import interaction_layers
    from models.registry import Registry
    from lakehouse.delta_io import table_exists
    from spark_jobs.ingest import ingest

    spec, cfg = st.spec, st.cfg
    if not (spec.resume and table_exists(st.spark, cfg.table_path("events"))):
        with st.timer.phase("ingest"):
            ingest(st.spark, cfg, spec.source)
    rows, cards, selections = PretrainRows(st.spark, cfg, spec), {}, {}
    for up in spec.upstreams:
        with st.timer.phase("pretrain"):
            cards[up] = pretrain_upstream(cfg, spec, up, rows, spec.resume)
    probed: dict = {}  # option -> the selection probed on its first seed
    for up in spec.upstreams:
        with st.timer.phase("select-layer"):
            if up.option in probed:
                adopt(cfg, cards[up].model_version, probed[up.option])
            else:
                probed[up.option] = select(st.spark, cfg, spec, cards[up].model_version)
            selections[up] = probed[up.option]
    lfms = [Lfm(up, cards[up].model_version, selections[up].selected,
                export_id(cfg, cards[up].model_version, selections[up].selected),
                len(interaction_layers(Registry(cfg).load(cards[up].model_version).model))) for up in spec.upstreams]
    return lfms, {"cards": cards, "selections": selections}


def layer_sweep(st: Study, ref: Lfm, points: list[str]) -> list[Job]:
    """Export the reference LFM at each sweep layer (each its own export, beside the selected one) and plan
    cr_gate runs on its sets."""
    from models.training.variants import TransferVariant

    swept = sweep_layers(st.spec.layers, points, ref.layer) if st.spec.layers else []
    jobs = []
    for layer in swept:
        export_of_layer = export_id(st.cfg, ref.version, layer)
        with st.timer.phase("run-daily exports"):
            if not (st.spec.resume and exported(st.cfg, st.spec, export_of_layer)):
                export(st.spark, st.cfg, st.spec, ref.version, layer)
        with st.timer.phase("training sets (Feast point-in-time)"):
            for tab in st.spec.tabs:
                st.store.put(export_of_layer, tab, fetch(st.spark, st.cfg, st.spec, tab, export_of_layer))
        jobs += sweep_jobs(st.spec, ref, export_of_layer, layer)
    if swept and TransferVariant.cr_gate not in st.spec.variants:  # the selected layer's cr_gate, on the main sets
        jobs += sweep_jobs(st.spec, ref, ref.export, ref.layer)
    return jobs


def export_and_fetch(st: Study, lfms: list[Lfm]) -> tuple[dict[str, TabSets], dict[str, float]]:
    """run-daily per LFM, then its training sets. Returns the reference's sets and, per tab, the validation share
    that makes none_more_data validate on none's rows. The reference's sets come out of its more-data sets."""
    spec, ref = st.spec, lfms[0]
    ref_sets: dict[str, TabSets] = {}
    valid_fraction = {}
    for lfm in lfms:
        with st.timer.phase("run-daily exports"):
            if not (spec.resume and exported(st.cfg, spec, lfm.export)):
                export(st.spark, st.cfg, spec, lfm.version, lfm.layer)
        with st.timer.phase("training sets (Feast point-in-time)"):
            for tab in tabs_of(spec, lfm.upstream):
                if lfm is ref:
                    more = fetch(st.spark, st.cfg, spec, tab, lfm.export, extra_days=spec.windows.more)
                    st.store.put(lfm.export + MORE, tab, more)
                    sets = ref_sets[tab] = window_of(more, spec.windows.train)
                    valid_fraction[tab] = matching_valid_fraction(sets.train.num_rows, more.train.num_rows,
                                                                  st.settings.trainer.valid_fraction)
                else:
                    sets = fetch(st.spark, st.cfg, spec, tab, lfm.export)
                    check_same_rows(ref_sets[tab].test, sets.test, st.keys, f"{lfm.upstream.label}, tab {tab}")
                st.store.put(lfm.export, tab, sets)
    return ref_sets, valid_fraction


def eval_rows(cfg: LfmConfig, task: str, sets: TabSets) -> EvalRows:
    """The labels the trainer sees (its own label rule) and the users as codes, for GAUC."""
    from models.encoders import encode_labels

    labels = encode_labels(sets.test, [task])[0][:, 0].numpy().astype(np.int8)
    users = np.unique(np.asarray(sets.test.column(cfg.schema.user_key).to_pylist(), dtype=object).astype(str),
                      return_inverse=True)[1]
    return EvalRows(labels, users.astype(np.int32))


def dense_ranks(scores: np.ndarray) -> np.ndarray:
    """Scores as dense ranks (order and ties kept, so AUC and GAUC are unchanged), compact when they fit 16 bits."""
    ranks = np.unique(scores, return_inverse=True)[1]
    return ranks.astype(np.uint16 if ranks.max(initial=0) < 2 ** 16 else np.uint32)


def run_report(spec: ReportSpec, base: LfmConfig, command: str = "") -> ReportResult:
    st = open_study(spec, base)
    lfms, made = build_lfms(st)
    ref = lfms[0]
    jobs = layer_sweep(st, ref, list(made["cards"][ref.upstream].cr_points))
    ref_sets, valid_fraction = export_and_fetch(st, lfms)
    with st.timer.phase("click-rate prior"):
        history = prior_history(st.spark, st.cfg, spec)
        prior_jobs, prior_fits = score_priors(st.cfg, spec.task, ref_sets, st.settings.trainer.valid_fraction,
                                              history, st.runlog, ref.version, NO_LAYER)
    jobs += main_jobs(spec, lfms, valid_fraction)
    workers = spec.jobs or default_jobs(spec)
    with st.timer.phase("downstream runs"):
        train_all(st.cfg, st.settings, spec.task, st.store, jobs, workers, st.runlog)

    done = st.runlog.done()
    records = [{**done[j.key], "sweep": j.sweep, "kind": j.kind} for j in prior_jobs + jobs]
    with st.timer.phase("statistics"):
        held_out = {tab: eval_rows(st.cfg, spec.task, ref_sets[tab]) for tab in spec.tabs}
        ev = Evidence(records, held_out, st.runlog.scores, spec.rounds)
        for run in ev.runs:
            run.rec.update(test_auc=run.auc, test_gauc=run.gauc)
        summary = summarise(ev, spec.tabs)
        spread = seed_spread(ev, spec.tabs, spec.lfm_seeds)
        verdict = verdicts(summary, spec.tabs)
        sweep = sweep_table(ev, spec.tabs, ref.version, ref.layer)
    ctx = Context(spec, command, upstreams=[upstream_row(lfm, made["cards"][lfm.upstream]) for lfm in lfms],
                  selections=selection_texts(lfms, made["selections"]),
                  priors=prior_fits, phases=st.timer.phases, total_s=st.timer.total, jobs=workers,
                  threads=st.settings.trainer.threads, resumed=st.timer.resumed)
    text = markdown(ctx, summary, spread, verdict, sweep)
    plot(spec.out_png, summary, spread, spec.tabs)
    write_outputs(spec, ctx, records, held_out, st.runlog, text)
    log.info("transfer report: %s, %s, %s in %.1f min", spec.out_md, spec.out_png, spec.out_json,
             st.timer.total / 60)
    return ReportResult(summary, records, {lfm.upstream.label: lfm.version for lfm in lfms}, st.timer.total, text)


def upstream_row(lfm: Lfm, card) -> dict:
    return {"label": lfm.upstream.label, "version": lfm.version, "layer": lfm.layer,
            "valid_score": max(h["valid_score"] for h in card.metrics["history"])}


def selection_texts(lfms: list[Lfm], selections: dict) -> list[tuple[str, str]]:
    """The heading and probe table of each probed LFM; the seeds that adopted its choice named under it."""
    out = []
    for lfm in lfms:
        sel = selections[lfm.upstream]
        if sel.model_version != lfm.version:
            continue
        adopted = [x.upstream.label for x in lfms if x is not lfm and selections[x.upstream] is sel]
        out.append((f"{lfm.upstream.label} (`{lfm.version}`): probe days {sel.probe_days[0]}..{sel.probe_days[-1]}, "
                    f"state warmed up from {(sel.warmup_days or sel.probe_days)[0]}; selected `{sel.selected}` "
                    f"(best `{sel.best}`; the rule: the narrowest point within one paired-bootstrap SE of the best)"
                    + (f"; {', '.join(adopted)} export the same layer (one probe per LFM option)" if adopted else ""),
                    sel.markdown()))
    return out


def write_outputs(spec: ReportSpec, ctx: Context, records: list[dict], rows: dict[str, EvalRows], runlog: RunLog,
                  text: str) -> None:
    """The markdown, the JSON records (one per run) and the per-row scores every cell is recomputed from."""
    spec.out_md.parent.mkdir(parents=True, exist_ok=True)
    spec.out_md.write_text(text)
    arrays = {}
    for tab, r in rows.items():
        arrays[f"tab{tab}.labels"], arrays[f"tab{tab}.users"] = r.labels, r.users
    for rec in records:
        arrays[rec["scores"]] = dense_ranks(runlog.scores(rec["scores"])[1])
    np.savez_compressed(spec.out_scores, **arrays)
    spec.out_json.write_text(json.dumps({
        "command": ctx.command, "windows": spec.windows.text(), "upstreams": ctx.upstreams,
        "phases_s": ctx.phases, "total_s": ctx.total_s, "rounds": spec.rounds, "priors": ctx.priors,
        "scores_file": spec.out_scores.name, "records": records}, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in ("lfm", "models", "spark_jobs", "feature_repo"):  # our progress; libraries stay at WARNING
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        spec, a = parse_args(argv)
        base = load_config(a.config)
        command = "python -m bench.transfer_report " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
        result = run_report(spec, base, command)
    except LfmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.markdown)
    print(f"\nwall time {result.seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The transfer study, end to end: what `python -m bench.transfer_report` runs (`--help` lists the subsets).

From a fresh workdir, through the platform's own code paths (`bench.transfer.prep`): ingest, then per LFM (a
lineage: its base trained on the first days) select-layer on the base, run-daily with daily updates over the export
days (the update, refresh, the quality gate, publish, materialize: each day by the version trained through the day
before), and the base frozen over the same days (the frozen-LFM protocol); per tab the Feast point-in-time training
sets of released days; the downstream runs (`bench.transfer.runs`), the click-rate prior, the more-data baseline and
the production model (`bench.transfer.baselines`); paired bootstrap intervals (`bench.transfer.stats`,
`bench.transfer.summary`, `bench.transfer.segments`); the markdown, PNG, JSON records and per-row scores
(`bench.transfer.tables`, `bench.transfer.plot`). The package: spec (what runs), plan (which runs), prep (data
through the pipeline), runs, baselines, segments, stats, summary, tables, plot, timing, report (this module).
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa

from bench.transfer.baselines import PriorFit, matching_valid_fraction, with_click_rates
from bench.transfer.plan import (MORE, NO_LAYER, RATES, Lfm, StudyError, main_jobs, sweep_jobs, sweep_layers,
                                 tabs_of)
from bench.transfer.plot import plot
from bench.transfer.prep import (TabSets, adopt, check_same_rows, export, export_id, exported, fetch, frozen,
                                 prior_history, segment_history, select, train_base, version_before, window_of,
                                 workdir_config)
from bench.transfer.segments import segment_masks
from bench.transfer.runs import Job, RunLog, SetStore, score_priors, train_all
from bench.transfer.spec import ReportSpec, parse_args
from bench.transfer.summary import (EvalRows, Evidence, seed_spread, segment_table, summarise, sweep_table,
                                    verdicts)
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
    cfg = workdir_config(base, spec.workdir, spec.cadence, spec.update_epochs)
    overrides = {k: v for k, v in (("max_epochs", spec.max_epochs), ("threads", spec.threads)) if v}  # None: keep
    settings = DownstreamSetup.from_config(cfg, **overrides)
    return Study(spec, cfg, get_spark(cfg), Timer(spec.workdir / "phases.json", resume=spec.resume),
                 SetStore(spec.workdir / "sets"), RunLog(spec.workdir), settings)


def build_lfms(st: Study) -> tuple[list[Lfm], dict]:
    """Ingest, then train every lineage's base and select its CR layer on days after its own, before the test
    days. The lineages' later versions come with their exports (`export_and_fetch`)."""
    from models.iim import interaction_layers
    from models.registry import Registry
    from lakehouse.delta_io import table_exists
    from spark_jobs.ingest import ingest

    spec, cfg = st.spec, st.cfg
    if not (spec.resume and table_exists(st.spark, cfg.table_path("events"))):
        with st.timer.phase("ingest"):
            ingest(st.spark, cfg, spec.source)
    cards, selections = {}, {}
    for up in spec.upstreams:
        with st.timer.phase("LFM bases"):
            cards[up] = train_base(st.spark, cfg, spec, up, spec.resume)
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
    if spec.frozen:
        ref = lfms[0]
        lfms.append(Lfm(ref.upstream, ref.version, ref.layer, export_id(frozen(cfg), ref.version, ref.layer),
                        ref.depth, frozen=True))
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


def export_and_fetch(st: Study, lfms: list[Lfm]) -> tuple[list[Lfm], dict[str, TabSets], dict[str, TabSets],
                                                          dict[str, float], dict[str, str]]:
    """run-daily per LFM (a lineage updated daily, the frozen base without updates), then its training sets.
    Returns the LFMs with their IIM checkpoints, the reference's window and more-data sets per tab, per tab the
    validation share that makes the more-data runs validate on the window runs' rows, and the lineages left out
    because the gate refused one of their days (label -> the gate's verdict; the reference's stops the study)."""
    from pipeline.daily import DailyFailed

    spec, ref = st.spec, lfms[0]
    ref_sets: dict[str, TabSets] = {}
    more_sets: dict[str, TabSets] = {}
    valid_fraction = {}
    done, refused = [], {}
    for lfm in lfms:
        cfg = frozen(st.cfg) if lfm.frozen else st.cfg
        with st.timer.phase("run-daily exports (lineages with their daily updates, the frozen base)"):
            if not (spec.resume and exported(cfg, spec, lfm.export)):
                try:
                    export(st.spark, cfg, spec, lfm.version, lfm.layer)
                except DailyFailed as err:
                    if lfm is ref or lfm.frozen:
                        raise
                    refused[lfm_label(lfm)] = str(err).split("\n  data docs:")[0].replace("\n  ", "; ")
                    log.warning("%s is left out: %s", lfm_label(lfm), refused[lfm_label(lfm)])
                    continue
        lfm = replace(lfm, checkpoint=None if lfm.frozen else version_before(cfg, lfm.version, spec.windows.test[0]))
        done.append(lfm)
        with st.timer.phase("training sets (Feast point-in-time)"):
            for tab in (spec.tabs if lfm.frozen else tabs_of(spec, lfm.upstream)):
                if lfm is done[0]:
                    more = more_sets[tab] = fetch(st.spark, cfg, spec, tab, lfm.export,
                                                  extra_days=spec.windows.more)
                    st.store.put(lfm.export + MORE, tab, more)
                    sets = ref_sets[tab] = window_of(more, spec.windows.train)
                    valid_fraction[tab] = matching_valid_fraction(sets.train.num_rows, more.train.num_rows,
                                                                  st.settings.trainer.valid_fraction)
                else:
                    sets = fetch(st.spark, cfg, spec, tab, lfm.export)
                    check_same_rows(ref_sets[tab].test, sets.test, st.keys, f"{lfm.upstream.label}, tab {tab}")
                st.store.put(lfm.export, tab, sets)
    return done, ref_sets, more_sets, valid_fraction, refused


def put_click_rates(st: Study, ref: Lfm, sets: dict[str, TabSets], more: dict[str, TabSets], fits: dict[str, dict],
                    history) -> None:
    """The production model's sets: the reference's window and more-data sets with the click rates as of each
    row's day, with the strengths the prior chose on the tab's validation rows."""
    users, items = history
    for tab in sets:
        fit = PriorFit(**fits[tab])
        for key, ts in ((ref.export + RATES, sets[tab]), (ref.export + MORE + RATES, more[tab])):
            st.store.put(key, tab, replace(ts, train=with_click_rates(ts.train, st.cfg.schema, fit, users, items),
                                           test=with_click_rates(ts.test, st.cfg.schema, fit, users, items)))


def eval_rows(cfg: LfmConfig, task: str, sets: TabSets, tab: str, history) -> EvalRows:
    """The labels the trainer sees (its own label rule), the users as codes (for GAUC) and the segment masks."""
    from models.encoders import encode_labels

    s, test = cfg.schema, sets.test
    labels = encode_labels(test, [task])[0][:, 0].numpy().astype(np.int8)
    keys = [np.asarray(test.column(c).to_pylist(), dtype=object).astype(str) for c in (s.user_key, s.item_key)]
    users = np.unique(keys[0], return_inverse=True)[1]
    segments = segment_masks(keys[0], keys[1], test.column("ds").to_numpy(zero_copy_only=False), tab, history)
    return EvalRows(labels, users.astype(np.int32), segments)


def dense_ranks(scores: np.ndarray) -> np.ndarray:
    """Scores as dense ranks (order and ties kept, so AUC and GAUC are unchanged), compact when they fit 16 bits."""
    ranks = np.unique(scores, return_inverse=True)[1]
    return ranks.astype(np.uint16 if ranks.max(initial=0) < 2 ** 16 else np.uint32)


def run_report(spec: ReportSpec, base: LfmConfig, command: str = "") -> ReportResult:
    st = open_study(spec, base)
    lfms, made = build_lfms(st)
    jobs = layer_sweep(st, lfms[0], list(made["cards"][lfms[0].upstream].cr_points))
    lfms, ref_sets, more_sets, valid_fraction, refused = export_and_fetch(st, lfms)
    ref = lfms[0]
    with st.timer.phase("click-rate prior and features"):
        history = prior_history(st.spark, st.cfg, spec)
        prior_jobs, prior_fits = score_priors(st.cfg, spec.task, ref_sets, st.settings.trainer.valid_fraction,
                                              history, st.runlog, ref.version, NO_LAYER)
        put_click_rates(st, ref, ref_sets, more_sets, prior_fits, history)
        segments = segment_history(st.spark, st.cfg, spec)
    jobs += main_jobs(spec, lfms, valid_fraction)
    workers = spec.jobs or default_jobs(spec)
    with st.timer.phase("downstream runs"):
        train_all(st.cfg, st.settings, spec.task, st.store, jobs, workers, st.runlog)

    done = st.runlog.done()
    records = [{**done[j.key], "sweep": j.sweep, "kind": j.kind} for j in prior_jobs + jobs]
    with st.timer.phase("statistics"):
        held_out = {tab: eval_rows(st.cfg, spec.task, ref_sets[tab], tab, segments) for tab in spec.tabs}
        ev = Evidence(records, held_out, st.runlog.scores, spec.rounds)
        for run in ev.runs:
            run.rec.update(test_auc=run.auc, test_gauc=run.gauc)
        summary = summarise(ev, spec.tabs)
        spread = seed_spread(ev, spec.tabs, spec.lfm_seeds)
        verdict = verdicts(summary, spec.tabs)
        sweep = sweep_table(ev, spec.tabs, ref.version, ref.layer)
        by_segment = segment_table(ev, summary, spec.tabs, spec.rounds)
    ctx = Context(spec, command, upstreams=upstream_rows(st.cfg, lfms, made["cards"],
                                                         [ref_sets[tab].test for tab in spec.tabs]),
                  selections=selection_texts(lfms, made["selections"]),
                  priors=prior_fits, phases=st.timer.phases, total_s=st.timer.total, jobs=workers,
                  threads=st.settings.trainer.threads, resumed=st.timer.resumed,
                  notes=[f"`{label}` is left out: the quality gate refused a day of its export, so it has no "
                         f"released vectors from there on. {verdict}" for label, verdict in refused.items()])
    text = markdown(ctx, summary, spread, verdict, sweep, by_segment)
    plot(spec.out_png, summary, spread, spec.tabs)
    write_outputs(spec, ctx, records, held_out, st.runlog, text)
    log.info("transfer report: %s, %s, %s in %.1f min", spec.out_md, spec.out_png, spec.out_json,
             st.timer.total / 60)
    return ReportResult(summary, records, {lfm_label(lfm): lfm.version for lfm in lfms}, st.timer.total, text)


def lfm_label(lfm: Lfm) -> str:
    return f"{lfm.upstream.label} (frozen)" if lfm.frozen else lfm.upstream.label


def upstream_rows(cfg: LfmConfig, lfms: list[Lfm], cards: dict, test: list[pa.Table]) -> list[dict]:
    """Per LFM: its base, its layer, its base's early-stopping score, for a lineage its versions, and the share of
    the `test` rows (every tab's) whose user and whose item the vocabularies of the IIM's checkpoint (the version
    trained through the day before the test days; the base for the frozen LFM) lack: those ids share one OOV row."""
    from models.lineage import lineage_of, members
    from models.registry import Registry

    registry = Registry(cfg)
    s = cfg.schema
    keys = {k: np.concatenate([np.asarray(t.column(k).to_pylist(), dtype=object).astype(str) for t in test])
            for k in (s.user_key, s.item_key)}
    rows = []
    for lfm in lfms:
        encoders = registry.load(lfm.checkpoint or lfm.version).encoders  # the IIM's checkpoint, or the frozen base
        vocab = {e.name: set(e.vocab) for e in encoders.user + encoders.item if e.name in keys}
        unseen = {k: float(np.mean([x not in vocab[k] for x in keys[k]])) for k in keys}
        card = cards[lfm.upstream]
        versions = [] if lfm.frozen else members(lfm.version, registry.list())
        growth = {}
        for v in versions:
            for name, n in lineage_of(v).vocab_growth.items():
                growth[name] = growth.get(name, 0) + n
        rows.append({"label": lfm_label(lfm), "version": lfm.version, "layer": lfm.layer,
                     "valid_score": max(h["valid_score"] for h in card.metrics["history"]),
                     "versions": len(versions) or 1, "checkpoint": lfm.checkpoint,
                     "seen_through": str(lineage_of(registry.card(lfm.checkpoint)).seen_through)
                     if lfm.checkpoint else str(lineage_of(card).seen_through),
                     "grown_ids": {k: growth[k] for k in (cfg.schema.user_key, cfg.schema.item_key) if k in growth},
                     "unseen_test_ids": unseen})
    return rows


def selection_texts(lfms: list[Lfm], selections: dict) -> list[tuple[str, str]]:
    """The heading and probe table of each probed LFM; the seeds that adopted its choice named under it."""
    out = []
    for lfm in (x for x in lfms if not x.frozen):
        sel = selections[lfm.upstream]
        if sel.model_version != lfm.version:
            continue
        adopted = [x.upstream.label for x in lfms if x is not lfm and not x.frozen
                   and selections[x.upstream] is sel]
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
        for i, mask in enumerate(r.segments.values()):
            arrays[f"tab{tab}.segment{i}"] = mask
    for rec in records:
        arrays[rec["scores"]] = dense_ranks(runlog.scores(rec["scores"])[1])
    np.savez_compressed(spec.out_scores, **arrays)
    spec.out_json.write_text(json.dumps({
        "command": ctx.command, "windows": spec.windows.text(), "upstreams": ctx.upstreams,
        "phases_s": ctx.phases, "total_s": ctx.total_s, "rounds": spec.rounds, "priors": ctx.priors,
        "scores_file": spec.out_scores.name,
        "segments": {f"segment{i}": name for i, name in enumerate(next(iter(rows.values())).segments)},
        "records": records}, indent=1, default=str))


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

"""The report's data, made by the platform's own code paths (it calls the pipeline, it does not re-implement it).

ingest (spark_jobs.ingest) -> per LFM: a lineage base trained and registered (pipeline.lineage.train_version) ->
select-layer on the base, never on a test day (spark_jobs.select_layer) -> run-daily with daily updates over the
export days (pipeline.daily.run_days: the lineage update, refresh, the quality gate, publish, materialize), and the
base frozen over the same days -> per tab, the point-in-time training and test sets of the export's feature
service over released days only (pipeline.downstream.training_sets). Every (lineage or frozen model, CR layer) is
its own export (`lfm.contract.ExportSpec`, its own partitions, views and releases), so they sit side by side in one
lakehouse. The click-rate prior's history is the samples frame (spark_jobs.samples), aggregated per key and day.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bench.transfer.spec import ReportSpec, Upstream
from lfm.config import LfmConfig, config_from_dict
from lfm.errors import LfmError

log = logging.getLogger("lfm.transfer_report")


# A daily update moves the CR layer's activations: the decayed CR state of an update day mixes the new version's
# day with the old version's past, and its day-over-day centred cosine fell to 0.10 on KuaiRand (2022-04-29, the
# first update; 0.94 under a frozen model), far past the default bound of 0.5. UR and IR keep their bounds and the
# version drift check (0.87 / 0.92 on that day); the CR tables keep every other check (collapse, coverage,
# not-empty). docs/transfer_report.md states it.
LINEAGE_CR_DRIFT = {t: {"min_mean_cosine": -1.0, "max_moved_share": 1.0} for t in ("cr_user", "cr_item")}


def workdir_config(base: LfmConfig, workdir: Path, cadence: int | None = None, epochs: int = 1) -> LfmConfig:
    """`base` with every writable path under `workdir` (a fresh lakehouse, registry and Feast repo); `cadence`:
    daily LFM updates every that many days (a lineage export) of `epochs` passes each, None: the exported model
    stays frozen."""
    workdir = workdir.resolve()  # absolute: relative config paths would resolve against the config's folder
    data = base.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    data.update(lakehouse=str(workdir / "lakehouse"))
    data["registry"] = {**data.get("registry", {}), "path": str(workdir / "registry")}
    data["feast"] = {**data.get("feast", {}), "repo_path": str(workdir / "feature_repo")}
    data["updates"] = {**data.get("updates", {}), "every_days": cadence, "epochs": epochs}
    if cadence:
        quality = data.setdefault("quality", {})
        quality["tables"] = {**LINEAGE_CR_DRIFT, **quality.get("tables", {})}
    return config_from_dict(data, "<transfer report>", str(workdir))


def frozen(cfg: LfmConfig) -> LfmConfig:
    """The same config with the exported model frozen (no daily updates, the gate's default CR drift bounds): the
    frozen-LFM protocol."""
    tables = {k: v for k, v in cfg.quality.tables.items() if k not in LINEAGE_CR_DRIFT}
    return cfg.model_copy(update={"updates": cfg.updates.model_copy(update={"every_days": None}),
                                  "quality": cfg.quality.model_copy(update={"tables": tables})})


def upstream_config(cfg: LfmConfig, up: Upstream) -> LfmConfig:
    """The config an LFM option pretrains with (only `model.embedding` differs; the seed is pretrain's argument)."""
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"embedding": up.option})})


def train_base(spark, cfg: LfmConfig, spec: ReportSpec, up: Upstream, resume: bool):
    """Train and register one lineage's base; with `resume`, the registered base of the same option, seed and
    days."""
    from models.lineage import lineage_of
    from models.registry import Registry
    from pipeline.lineage import train_version

    w = spec.windows
    days = {"train": [d.isoformat() for d in w.pretrain], "valid": [d.isoformat() for d in w.pretrain_valid]}
    if resume:
        for card in Registry(cfg).list():
            m = card.metrics
            if (m.get("seed") == up.seed and m.get("embedding") == up.option.value and m.get("days") == days
                    and lineage_of(card).parent is None):
                log.info("%s: base %s is registered (resumed)", up.label, card.model_version)
                return card
    return train_version(spark, upstream_config(cfg, up), list(w.pretrain), list(w.pretrain_valid), seed=up.seed,
                         say=log.info).card


def version_before(cfg: LfmConfig, base: str, day: dt.date) -> str:
    """The lineage's version trained through the latest day before `day` (the IIM's checkpoint for test days from
    `day` on: it has seen no test label)."""
    from models.lineage import maker_of, members
    from models.registry import Registry

    maker = maker_of(members(base, Registry(cfg).list()), day)
    if maker is None:
        raise LfmError(f"no version of the lineage of {base} was trained before {day}")
    return maker.model_version


def select(spark, cfg: LfmConfig, spec: ReportSpec, version: str):
    """The CR layer, chosen by the probe on the base (days after its own, before the test days) and recorded for
    the export."""
    from models.registry import Registry
    from spark_jobs.select_layer import recorded_selection, select_layer

    card = Registry(cfg).card(version)
    protected = [d.isoformat() for d in spec.windows.protect]
    if (card.selected_cr_layer and isinstance(card.probe_table, dict) and card.probe_table.get("protected") == protected
            and not card.probe_table.get("adopted_from")):
        return recorded_selection(card)  # resumed: chosen by an earlier run with the same protected window
    return select_layer(spark, cfg, version, list(spec.windows.probe), warmup_days=spec.windows.probe_warmup,
                        record=True, protect=spec.windows.protect)


def adopt(cfg: LfmConfig, version: str, chosen) -> None:
    """Record on `version` the layer probed on another seed of the same LFM option (one probe per option: each
    costs minutes per day of the chain, and the points of one architecture are the same)."""
    from models.registry import Registry

    registry = Registry(cfg)
    table = registry.card(chosen.model_version).probe_table
    registry.set_selected_layer(version, chosen.selected, {**table, "adopted_from": chosen.model_version})


def export_id(cfg: LfmConfig, version: str, layer: str) -> str:
    """The id of `version`'s export at `layer` (its partitions, Feast views and releases carry it)."""
    from pipeline.spec import resolve_spec

    return resolve_spec(cfg, version, layer).id


def export(spark, cfg: LfmConfig, spec: ReportSpec, version: str, layer: str) -> None:
    """run-daily over the export days: with `cfg`'s daily updates the lineage update first, then refresh, the
    quality gate, publish and materialize, each step recorded in `runs`; the first day starts the CR chain cold.
    A day another export ran last is redone for this one (run-daily's own rule), so lineages, the frozen model and
    sweep layers export the same days one after another."""
    from pipeline.daily import run_days

    run_days(cfg, list(spec.windows.export), lambda: spark, model_version=version, cr_layer=layer,
             cold_start=True, say=lambda line: log.info("%s", line.strip()))


def exported(cfg: LfmConfig, spec: ReportSpec, export: str) -> bool:
    """Whether every export day is released for `export` (a resumed run skips its run-daily)."""
    from lakehouse.releases import released

    return set(spec.windows.export) <= set(released(cfg, export, list(spec.windows.export)))


@dataclass(frozen=True)
class TabSets:
    """A tab's training and test rows from one version's feature service, in one canonical row order."""

    train: pa.Table
    test: pa.Table
    meta: object  # pipeline.downstream.TrainingSets without its tables


def fetch(spark, cfg: LfmConfig, spec: ReportSpec, tab: str, export: str,
          extra_days: tuple[dt.date, ...] = ()) -> TabSets:
    """The Feast point-in-time sets of `tab` from `export`'s feature service (released days only); `extra_days`
    widen the training days (none_more_data).

    Rows are sorted canonically (time, keys, scenario, labels) and unlabelled test rows dropped, so every model of
    a tab scores the same test rows in the same order: the paired bootstrap resamples row indices.
    """
    from models.training.pretrain import sort_rows
    from pipeline.downstream import training_sets

    ts = training_sets(spark, cfg, tab, sorted(set(extra_days) | set(spec.windows.train)), list(spec.windows.test),
                       model_version=export, vectors_needed=not extra_days)  # extra days: a control's, no vectors
    test = sort_rows(ts.test, cfg.schema)
    test = test.filter(pc.is_valid(test.column(spec.task)))
    return TabSets(sort_rows(ts.train, cfg.schema), test, replace(ts, train=None, test=None))


def window_of(sets: TabSets, train_days: tuple[dt.date, ...]) -> TabSets:
    """The training rows of `train_days` alone, from sets fetched with extra days: a row's point-in-time join
    depends on the row only, so this equals fetching the window by itself, without a second join."""
    days = pa.array(list(train_days), pa.date32())
    return replace(sets, train=sets.train.filter(pc.is_in(sets.train.column("ds"), value_set=days)))


def prior_history(spark, cfg: LfmConfig, spec: ReportSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Positive and total rows per (user, day) and per (item, day) over every scenario, on the days before the
    test window: no model of the study sees a test-window label, the prior neither."""
    from pyspark.sql import functions as F

    from spark_jobs.samples import samples

    s = cfg.schema
    first = min(spec.windows.pretrain + spec.windows.more)
    days = [first + dt.timedelta(days=i) for i in range((spec.windows.test[0] - first).days)]
    rows = samples(spark, cfg, days).where(F.col(spec.task).isNotNull())
    label = (F.col(spec.task) > 0).cast("long")

    def per(key: str) -> pd.DataFrame:
        agg = rows.groupBy(F.col(key).alias("key"), "ds").agg(F.sum(label).alias("positives"),
                                                               F.count(F.lit(1)).alias("rows"))
        return agg.toPandas()

    return per(s.user_key), per(s.item_key)


def segment_history(spark, cfg: LfmConfig, spec: ReportSpec):
    """Rows per (user, scenario, day) on the days before the test days' end, and each item's first day in the log
    through the last test day (bench.transfer.segments cuts the test rows by them)."""
    from pyspark.sql import functions as F

    from bench.transfer.segments import SegmentHistory
    from spark_jobs.samples import samples

    s = cfg.schema
    first = min(spec.windows.pretrain + spec.windows.more)
    rows = samples(spark, cfg, [first + dt.timedelta(days=i) for i in range((spec.windows.test[-1] - first).days + 1)])
    users = rows.groupBy(F.col(s.user_key).cast("string").alias("key"),
                         F.col(s.scenario).cast("string").alias("scenario"), "ds").agg(F.count(F.lit(1)).alias("rows"))
    items = rows.groupBy(F.col(s.item_key).cast("string").alias("key")).agg(F.min("ds").alias("first"))
    return SegmentHistory(users.toPandas(), items.toPandas())


def check_same_rows(reference: pa.Table, other: pa.Table, keys: list[str], what: str) -> None:
    """Fail closed when two sets' test rows differ: a paired comparison on different rows would be meaningless."""
    same = reference.num_rows == other.num_rows and all(
        reference.column(k).equals(other.column(k)) for k in keys)
    if not same:
        raise LfmError(f"the test rows of {what} differ from the reference set's ({other.num_rows} vs "
                       f"{reference.num_rows} rows): the point-in-time join must keep every row in one order")

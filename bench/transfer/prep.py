"""The report's data, made by the platform's own code paths (it calls the pipeline, it does not re-implement it).

ingest (spark_jobs.ingest) -> per LFM: pretrain + register (models.training.pretrain, models.registry) ->
select-layer on days before the protected downstream window (spark_jobs.select_layer) -> run-daily over the export
days (pipeline.daily.run_days: refresh, the quality gate, publish, materialize) -> per tab, the point-in-time
training and test sets of the export's feature service over released days only (pipeline.downstream.training_sets).
Every (model version, CR layer) is its own export (`lfm.contract.ExportSpec`, its own partitions, views and
releases), so LFMs and a CR layer sweep sit side by side in one lakehouse. The click-rate prior's history is the
samples frame (spark_jobs.samples), aggregated per key and day.
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


def workdir_config(base: LfmConfig, workdir: Path) -> LfmConfig:
    """`base` with every writable path under `workdir` (a fresh lakehouse, registry and Feast repo)."""
    workdir = workdir.resolve()  # absolute: relative config paths would resolve against the config's folder
    data = base.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    data.update(lakehouse=str(workdir / "lakehouse"))
    data["registry"] = {**data.get("registry", {}), "path": str(workdir / "registry")}
    data["feast"] = {**data.get("feast", {}), "repo_path": str(workdir / "feature_repo")}
    return config_from_dict(data, "<transfer report>", str(workdir))


def upstream_config(cfg: LfmConfig, up: Upstream) -> LfmConfig:
    """The config an LFM option pretrains with (only `model.embedding` differs; the seed is pretrain's argument)."""
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"embedding": up.option})})


class PretrainRows:
    """The pretraining days' samples, read from the lakehouse once for every LFM that needs them."""

    def __init__(self, spark, cfg: LfmConfig, spec: ReportSpec):
        self.spark, self.cfg, self.spec = spark, cfg, spec
        self.tables: tuple[pa.Table, pa.Table] | None = None

    def get(self) -> tuple[pa.Table, pa.Table]:
        from spark_jobs.samples import samples_arrow

        if self.tables is None:
            w = self.spec.windows
            self.tables = (samples_arrow(self.spark, self.cfg, list(w.pretrain)),
                           samples_arrow(self.spark, self.cfg, list(w.pretrain_valid)))
        return self.tables


def pretrain_upstream(cfg: LfmConfig, spec: ReportSpec, up: Upstream, rows: PretrainRows, resume: bool):
    """Pretrain and register one LFM; with `resume`, the registered one of the same option, seed and days."""
    from models.training.pretrain import pretrain
    from models.registry import Registry

    days = {"train": [d.isoformat() for d in spec.windows.pretrain],
            "valid": [d.isoformat() for d in spec.windows.pretrain_valid]}
    if resume:
        for card in Registry(cfg).list():
            m = card.metrics
            if m.get("seed") == up.seed and m.get("embedding") == up.option.value and m.get("days") == days:
                log.info("%s: model %s is registered (resumed)", up.label, card.model_version)
                return card
    ucfg = upstream_config(cfg, up)
    train, valid = rows.get()
    result = pretrain(train, valid, ucfg, seed=up.seed, progress=log.info)
    return Registry(ucfg).register(result.model, result.encoders, {**result.metrics, "days": days})


def select(spark, cfg: LfmConfig, spec: ReportSpec, version: str):
    """The CR layer, chosen by the probe on days before the downstream window and recorded for the export."""
    from models.registry import Registry
    from spark_jobs.select_layer import recorded_selection, select_layer

    card = Registry(cfg).card(version)
    protected = [d.isoformat() for d in spec.windows.protect]
    if (card.selected_cr_layer and isinstance(card.probe_table, dict) and card.probe_table.get("protected") == protected
            and not card.probe_table.get("adopted_from")):
        return recorded_selection(card)  # resumed: chosen by an earlier run with the same protected window
    return select_layer(spark, cfg, version, list(spec.windows.probe) if spec.windows.probe else None,
                        warmup_days=spec.windows.probe_warmup, record=True, protect=spec.windows.protect)


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
    """run-daily over the export days: refresh, the quality gate, publish and materialize, each step recorded in
    `runs`; the first day starts the CR chain cold. A day another export ran last is redone for this one
    (run-daily's own rule), so LFMs and sweep layers export the same days one after another."""
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


def check_same_rows(reference: pa.Table, other: pa.Table, keys: list[str], what: str) -> None:
    """Fail closed when two sets' test rows differ: a paired comparison on different rows would be meaningless."""
    same = reference.num_rows == other.num_rows and all(
        reference.column(k).equals(other.column(k)) for k in keys)
    if not same:
        raise LfmError(f"the test rows of {what} differ from the reference set's ({other.num_rows} vs "
                       f"{reference.num_rows} rows): the point-in-time join must keep every row in one order")

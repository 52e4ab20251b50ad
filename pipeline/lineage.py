"""Model lineages in the pipeline: train a version (a base or a continuation), pick the version that makes a day,
and the daily update `run-daily` runs before a lineage export's refresh.

A lineage export (`updates.every_days: N`, `ExportSpec.cadence_days`) is rooted at a base version. Before day D,
once N days have passed since the newest version's last seen day, that version is continued on those days (ids
first seen there get rows of their own); day D is then exported by the version whose seen days end latest before D
(`models.lineage.maker_of`), so no exported vector has seen the labels of its own day or a later one.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lfm.config import LfmConfig
from lfm.contract import DayModel, ExportSpec
from lfm.errors import LfmError
from lfm.names import parse_ds
from models.lineage import Lineage, lineage_of, maker_of, members, newest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from models.registry import ModelCard
    from models.training.pretrain import PretrainResult

log = logging.getLogger("lfm.lineage")


class NoVersionForDay(LfmError):
    """Every version of the lineage has seen the day to export (or a later one)."""


@dataclass(frozen=True)
class TrainedVersion:
    card: ModelCard
    result: PretrainResult
    metrics: dict


def train_version(spark: SparkSession, cfg: LfmConfig, train: list[dt.date], valid: list[dt.date],
                  test: list[dt.date] | None = None, parent: str | None = None, seed: int | None = None,
                  say: Callable[[str], None] | None = print) -> TrainedVersion:
    """Pretrain a base (`parent` None) or continue `parent` on `train` (early stopping on `valid`), and register
    the version with its lineage: the parent's seen days plus `train` and `valid`, whose labels shaped it."""
    from models.registry import Registry
    from models.training.pretrain import pretrain
    from spark_jobs.samples import samples_arrow

    registry = Registry(cfg)
    checkpoint = registry.load(parent) if parent else None
    seen = list(train) + list(valid)
    lineage = Lineage.base(seen) if checkpoint is None else lineage_of(checkpoint.card).continued(parent, seen, {})
    splits = {name: samples_arrow(spark, cfg, days) for name, days in
              (("train", train), ("valid", valid), ("test", test)) if days}
    if say:
        say("samples: " + ", ".join(f"{k} {v.num_rows:,} rows" for k, v in splits.items()))
    result = pretrain(splits["train"], splits["valid"], cfg, test=splits.get("test"), seed=seed, parent=checkpoint,
                      progress=say)
    metrics = {**result.metrics, "days": {k: [d.isoformat() for d in v] for k, v in
                                          (("train", train), ("valid", valid), ("test", test)) if v}}
    card = registry.register(result.model, result.encoders, metrics,
                             Lineage(lineage.parent, lineage.seen_days, result.vocab_growth))
    return TrainedVersion(card, result, metrics)


def root_card(cfg: LfmConfig, card: ModelCard) -> ModelCard:
    """The base version of a card's lineage: what a lineage export is keyed by, whichever version was named."""
    from models.lineage import root_of
    from models.registry import Registry

    registry = Registry(cfg)
    root = root_of(card, registry.list())
    return card if root == card.model_version else registry.resolve(root)


def lineage_cards(cfg: LfmConfig, spec: ExportSpec) -> list[ModelCard]:
    from models.registry import Registry

    return members(spec.model_version, Registry(cfg).list())


def day_model(cfg: LfmConfig, spec: ExportSpec, model_dir: str, ds: str | dt.date) -> DayModel:
    """The version that makes day `ds`: the frozen export's model (`model_dir`, verified already), or the
    lineage's version trained through the latest day before `ds` (verified here)."""
    from models.registry import Registry

    if not spec.lineage:
        return DayModel(spec.model_version, model_dir)
    day = parse_ds(ds)
    maker = maker_of(lineage_cards(cfg, spec), day)
    if maker is None:
        raise NoVersionForDay(f"every version of the lineage of {spec.model_version} has seen {day} or a later day, "
                              f"so its vectors of {day} would have learned that day's labels: export days after "
                              f"{lineage_of(Registry(cfg).card(spec.model_version)).seen_through} (the base's last "
                              "seen day), or pretrain a base on earlier days")
    return DayModel(maker.model_version, str(Registry(cfg).path(maker.model_version)))


def update_days(cfg: LfmConfig, spec: ExportSpec, ds: str | dt.date) -> list[dt.date]:
    """The days the lineage must be continued on before day `ds` is exported: every day after its newest version's
    last seen day through D-1, once there are `cadence_days` of them; [] for a frozen export or when not due."""
    if not spec.lineage:
        return []
    return _due(spec, newest(lineage_cards(cfg, spec)), ds)


def _due(spec: ExportSpec, last: ModelCard, ds: str | dt.date) -> list[dt.date]:
    """`update_days` given the lineage's newest version (the registry read once by the caller)."""
    since = lineage_of(last).seen_through
    end = parse_ds(ds) - dt.timedelta(days=1)
    if since is None or (end - since).days < spec.cadence_days:
        return []
    return [since + dt.timedelta(days=i) for i in range(1, (end - since).days + 1)]


def continue_lineage(spark: SparkSession, cfg: LfmConfig, spec: ExportSpec, ds: str | dt.date,
                     say: Callable[[str], None] | None = None) -> ModelCard | None:
    """The daily update: continue the lineage's newest version on the days since it (through D-1) when due,
    `updates.epochs` passes with no held-out day; None when not due or those days hold no events."""
    from lakehouse.delta_io import partition_dates

    if not spec.lineage:
        return None
    last = newest(lineage_cards(cfg, spec))
    days = _due(spec, last, ds)
    if not days:
        return None
    path = cfg.table_path("events")
    have = set(partition_dates(spark, path, "ds", storage=cfg.delta_rs_options(path)))
    train = [d for d in days if d in have]
    if not train:
        log.info("lineage of %s: no events on %s..%s, nothing to continue on", spec.model_version, days[0], days[-1])
        return None
    parent = last.model_version
    updated = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_epochs": cfg.updates.epochs})})
    done = train_version(spark, updated, train, [train[-1]], parent=parent, say=say)
    log.info("lineage of %s: %s continued on %s..%s as %s", spec.model_version, parent, train[0], train[-1],
             done.card.model_version)
    return done.card

"""Downstream training on Feast training sets: the Python API behind `lfm train-downstream` and the report.

The training and test sets are the point-in-time join (`serving.offline.training_table`) of the scenario's samples
(`spark_jobs.samples`) with the pinned feature service, over *released* days only, never a direct read of the
embedding tables; the rows whose previous day is not released are counted (`fell_back`). `bench/transfer_report.py` calls `training_sets` and `train_on_sets` too, so the report measures exactly
what the verb trains.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lfm.config import LfmConfig
from lfm.errors import LfmError

log = logging.getLogger("lfm.downstream")

PROJECTIONS_DIR = "downstream"  # under the model registry root: <registry>/downstream/<version>/retrieval_*.pt


class LostEntityRows(LfmError):
    """The point-in-time join returned another number of rows than it was given."""


@dataclass(frozen=True)
class TrainingSets:
    """A scenario's training and test rows with the pinned service's vectors, as Arrow tables."""

    train: object  # pyarrow.Table
    test: object  # pyarrow.Table
    scenario: str
    model_version: str  # the version the feature service pins
    feature_service: str
    seconds: float
    export_id: str = ""
    fell_back: int = 0  # rows whose previous day is not released: an older release within the TTL, or nulls


def check_task(cfg: LfmConfig, task: str) -> None:
    from models.downstream import MissingTask

    if task not in cfg.schema.tasks:
        raise MissingTask(f"task column {task!r} does not exist: the data schema's tasks are {cfg.schema.tasks} "
                          "(schema.tasks in lfm.yaml)")


def training_sets(spark, cfg: LfmConfig, scenario: str, train_days: list[dt.date], test_days: list[dt.date],
                  model_version: str | None = None, feature_service: str | None = None,
                  store=None, vectors_needed: bool = True) -> TrainingSets:
    """Samples of `scenario` on the train and test days, joined point-in-time with the pinned feature service.

    Refuses, before any Spark job, rows that no released day precedes unless `vectors_needed` is False (a control
    that reads no vectors, e.g. the report's `none_more_data` on every earlier day); then a scenario without rows
    in either window, and a join that loses or duplicates entity rows.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    from serving.offline import fallback_rows, training_table
    from serving.online import resolve_service
    from feature_repo.store import open_store
    from models.downstream import EmptyScenario
    from spark_jobs.samples import samples

    t0 = time.perf_counter()
    s = cfg.schema
    overlap = sorted(set(train_days) & set(test_days))
    if overlap:
        raise LfmError(f"training and test days overlap on {[d.isoformat() for d in overlap]}: test on later days")
    store = store or open_store(cfg)
    service = resolve_service(store, feature_service, model_version)
    version = (service.tags or {}).get("model_version", "")
    export_id = (service.tags or {}).get("export_id", "")
    if vectors_needed:
        check_release_before(cfg, export_id, min(train_days + test_days))
    if feature_service is None and model_version is None:
        log.warning("training sets from %s (model %s): pin a version with --model for a reproducible run",
                    service.name, version)
    rows = samples(spark, cfg, sorted(set(train_days) | set(test_days)))
    rows = rows.where(F.col(s.scenario).cast("string") == F.lit(str(scenario)))
    counts = {r["ds"]: r["n"] for r in rows.groupBy("ds").agg(F.count(F.lit(1)).alias("n")).collect()}
    for name, days in (("training", train_days), ("test", test_days)):
        if not any(counts.get(d, 0) for d in days):
            known = sorted({str(r[0]) for r in samples(spark, cfg, days).select(s.scenario).distinct().collect()},
                           key=lambda v: (len(v), v))
            raise EmptyScenario(f"scenario {s.scenario}={scenario!r} has no rows on the {name} days "
                                f"{days[0]}..{days[-1]}; scenarios with rows there: {known}")
    n_in = sum(counts.values())
    joined = training_table(spark, cfg, rows, feature_service=service.name, store=store)
    if joined.num_rows != n_in:
        raise LostEntityRows(f"the point-in-time join returned {joined.num_rows:,} rows for {n_in:,} entity rows "
                             f"of scenario {scenario!r}: a training set must keep every row; see serving.offline")
    ds = joined.column("ds")
    train = joined.filter(pc.is_in(ds, value_set=pa.array(train_days, pa.date32())))
    test = joined.filter(pc.is_in(ds, value_set=pa.array(test_days, pa.date32())))
    return TrainingSets(train=train, test=test, scenario=str(scenario), model_version=version,
                        feature_service=service.name, seconds=time.perf_counter() - t0, export_id=export_id,
                        fell_back=fallback_rows(spark, cfg, rows, export_id))


def check_release_before(cfg: LfmConfig, export_id: str, first: dt.date) -> None:
    """Refuse rows that no released day precedes: every vector would be missing for a broken reason (not a new
    entity). An entity without a state on a released day is new, and its rows train with a learned default."""
    from lakehouse import releases
    from models.downstream import NoReleaseBefore

    if not export_id or any(d < first for d in releases.released(cfg, export_id)):
        return
    before = first - dt.timedelta(days=1)
    raise NoReleaseBefore(f"no day of export {export_id} is released before {first}, the first day of these rows, "
                          f"so no row could have a vector: run `lfm run-daily --ds {before}` (with --cold-start if "
                          f"it starts the CR chain), or train on days after a released one")


def first_day(sets: TrainingSets) -> dt.date:
    """The first day of the sets' rows."""
    import pyarrow.compute as pc

    return min(pc.min(t.column("ds")).as_py() for t in (sets.train, sets.test) if t.num_rows)


def iim_source(cfg: LfmConfig, sets: TrainingSets, checkpoint: str | None):
    """The verified checkpoint for module-level variants: the features' version or, for a lineage export's
    features, any version of that lineage (e.g. the one trained through the day before the test days); another
    version is refused."""
    from models.iim import IimSource
    from models.lineage import root_of
    from models.registry import Registry

    registry = Registry(cfg)
    loaded = registry.load(checkpoint or sets.model_version)
    source = IimSource(loaded, scenario=sets.scenario, lineage_root=root_of(loaded.card, registry.list()))
    source.check_feature_version(sets.model_version)
    return source


def train_on_sets(cfg: LfmConfig, sets: TrainingSets, task: str, request, seed: int, settings=None,
                  checkpoint: str | None = None, iim=None, keep_model: bool = False):
    """Train and test one variant on fetched training sets (`models.training.transfer.run_transfer`)."""
    from models.training.setup import DownstreamSetup
    from models.training.transfer import run_transfer
    from models.training.variants import Granularity

    check_task(cfg, task)
    if request.representations:
        check_release_before(cfg, sets.export_id, first_day(sets))
    settings = settings or DownstreamSetup.from_config(cfg)
    if request.variant.granularity is Granularity.module and iim is None:
        iim = iim_source(cfg, sets, checkpoint)
    return run_transfer(sets.train, sets.test, task, request, cfg.schema, settings, seed, scenario=sets.scenario,
                        iim=iim, feature_version=sets.model_version, keep_model=keep_model)


def save_projection(cfg: LfmConfig, sets: TrainingSets, task: str, result, path: Path | None) -> Path:
    """Write a retrieval two-tower's user projection for `lfm retrieve` (models.two_tower.load_user_projection)."""
    from models.two_tower import ProjectionCard, projection_path, save_user_projection

    model = result.model
    target = path or projection_path(cfg.resolve(cfg.registry.path) / PROJECTIONS_DIR, sets.model_version,
                                     model.source, sets.scenario, task)
    card = ProjectionCard(source=model.source.value, in_dim=model.user.in_dim, out_dim=model.user.out_dim,
                          hidden=model.user.hidden, model_version=sets.model_version, scenario=sets.scenario,
                          task=task, metrics={"test_auc": result.test_auc,
                                              **{f"recall@{k}": v for k, v in result.recall.items()}})
    return save_user_projection(target, model, card)


def trained_projections(cfg: LfmConfig, model_version: str) -> list[Path]:
    """The user projections `lfm train-downstream` saved for `model_version` (`save_projection`'s default place),
    newest first; none when the registry is not on this machine's disk (projections are saved locally)."""
    root = cfg.location(cfg.registry.path)
    folder = root.path() / PROJECTIONS_DIR / model_version if root.local else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(folder.glob("retrieval_*.pt"), key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def parse_variant(value: str):
    from models.downstream import DownstreamError
    from models.training.variants import TransferVariant

    try:
        return TransferVariant(value)
    except ValueError:
        raise DownstreamError(f"unknown --transfer {value!r}; choose one of "
                              f"{[v.value for v in TransferVariant]}") from None

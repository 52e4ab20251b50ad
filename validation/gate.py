"""The quality gate of one day: validate each table's partition with GE, record pass/quarantine, draw the report.

`run_gate` is the one call `lfm refresh` and `lfm validate` make. A table passes when every expectation of its
partition suite (and, for embedding tables, of its day-metrics suite) succeeds; otherwise it is quarantined:
its data stays in Delta, but `validation.status.passed_tables` leaves it out, so it is never materialized and
the online store keeps the last passed snapshot. Each table's batch (partition plus per-row vector statistics,
see `validation.batch`) is cached once, checked by GE in Spark, then released.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from great_expectations.core.run_identifier import RunIdentifier
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lfm.config import LfmConfig
from lfm.config.quality import EMBEDDING_TABLES
from lfm.names import check_model_version, check_run_id, parse_ds
from spark_jobs.delta_io import ds_predicate, table_exists
from validation import context, metrics, report, status, suites
from validation.batch import STAT_COLUMNS, read_batch
from validation.dims import expected_dim, recorded_dims
from validation.errors import QualityError, QualityGateFailed
from validation.expectations import failure_name
from validation.tables import TableSpec, table_spec

log = logging.getLogger(__name__)
@dataclass(frozen=True)
class TableResult:
    table: str
    rows: int  # rows in the validated partition (all model versions of the ds for an embedding table)
    details: dict[str, str]  # failed expectation name -> what GE observed, or the error it raised
    metrics: dict[str, float | None]  # day-level metrics of an embedding table (empty for input tables)
    seconds: float

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the failed expectations (see validation.expectations.failure_name)."""
        return tuple(self.details)

    @property
    def passed(self) -> bool:
        return not self.details


@dataclass(frozen=True)
class GateResult:
    ds: dt.date
    model_version: str | None
    run_id: str
    tables: dict[str, TableResult]
    docs_index: Path  # GE Data Docs site of this lakehouse (every run's validation pages are linked there)
    report_png: Path | None  # spectra and drift histograms of this run's embedding tables
    seconds: float

    @property
    def quarantined(self) -> tuple[str, ...]:
        return tuple(t for t, r in self.tables.items() if not r.passed)

    @property
    def passed(self) -> bool:
        return not self.quarantined

    def summary(self) -> str:
        """A few lines for a terminal or a log: the verdict, then each quarantined table and why."""
        head = (f"quality gate ds={self.ds} model={self.model_version or '-'} run={self.run_id}: "
                f"{len(self.tables) - len(self.quarantined)} passed, {len(self.quarantined)} quarantined "
                f"({self.seconds:.1f}s)")
        lines = [head]
        for name in self.quarantined:
            r = self.tables[name]
            lines.append(f"  {name}: quarantined: " + "; ".join(f"{f} [{r.details.get(f, '')}]" for f in r.failed))
        lines.append(f"  data docs: {self.docs_index}")
        if self.report_png:
            lines.append(f"  report: {self.report_png}")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """For callers that must stop (e.g. `lfm refresh`): the CLI prints the summary and exits non-zero."""
        if not self.passed:
            raise QualityGateFailed(self.summary())


def run_gate(spark: SparkSession, cfg: LfmConfig, ds: str | dt.date, model_version: str | None = None,
             tables: list[str] | tuple[str, ...] | None = None, run_id: str | None = None,
             dims: dict[str, int] | None = None) -> GateResult:
    """Validate `tables` (default: the four embedding tables) of day `ds` for `model_version` and record it.

    `model_version` defaults to the version with most rows in the day's embedding partitions; `dims` gives the
    expected vector widths (else the model registry, else `quality.dims`).
    """
    t0 = time.perf_counter()
    day = parse_ds(ds)
    names = list(dict.fromkeys(tables or EMBEDDING_TABLES))
    specs = [table_spec(cfg, n) for n in names]
    if model_version is not None:
        check_model_version(model_version)
    elif any(s.is_embedding for s in specs):
        model_version = _majority_version(spark, cfg, [s for s in specs if s.is_embedding], day)
    if dims is None and any(s.is_embedding for s in specs):
        dims = recorded_dims(spark, cfg, day, model_version)  # the CR layer that day's refresh exported
    widths = {s.name: expected_dim(cfg, s.name, model_version, dims) for s in specs if s.is_embedding}  # fail early
    run_id = check_run_id(run_id or uuid.uuid4().hex[:12])
    ge_run = RunIdentifier(run_name=f"{day.isoformat()}_{run_id}")
    results: dict[str, TableResult] = {}
    day_metrics: dict[str, metrics.DayMetrics] = {}
    keys: list = []
    with context.locked(cfg):
        ctx = context.get_context(cfg)
        for spec in specs:
            results[spec.name], m, table_keys = _validate_table(spark, cfg, ctx, spec, day, model_version, ge_run,
                                                                widths.get(spec.name))
            keys += table_keys
            if m is not None:
                day_metrics[spec.name] = m
            log.info("gate %s %s: %s in %.1fs", day, spec.name, "passed" if results[spec.name].passed
                     else f"quarantined {list(results[spec.name].failed)}", results[spec.name].seconds)
        context.build_docs(ctx, keys)
    png = None
    if day_metrics:
        png = report.write_report(
            context.quality_root(cfg) / "reports" / day.isoformat() / f"{run_id}.png",
            f"quality gate ds={day} model={model_version} run={run_id}",
            {n: (results[n].passed, m) for n, m in day_metrics.items()}, cfg.quality.center)
    checked_at = dt.datetime.now(dt.timezone.utc)
    status.record(spark, cfg, [
        status.StatusRow(ds=day, table=s.name, model_version=model_version if s.is_embedding else None,
                         run_id=run_id, passed=results[s.name].passed, failed_expectations=list(results[s.name].failed),
                         checked_at=checked_at, metrics=results[s.name].metrics)
        for s in specs])
    return GateResult(ds=day, model_version=model_version, run_id=run_id, tables=results,
                      docs_index=context.docs_index(cfg), report_png=png, seconds=time.perf_counter() - t0)


def _validate_table(spark: SparkSession, cfg: LfmConfig, ctx, spec: TableSpec, day: dt.date,
                    model_version: str | None, ge_run: RunIdentifier, dim: int | None):
    """One table: its partition suite, and for an embedding table its day metrics and their suite."""
    t0 = time.perf_counter()
    df = read_batch(spark, cfg, spec, day, model_version).persist()
    day_metrics, keys, failed, rows = None, [], {}, 0
    try:
        if spec.is_embedding:
            suite = suites.embedding_suite(cfg, spec, day, model_version, dim)
        elif spec.name == "events":
            suite = suites.events_suite(cfg, spec, day)
        else:
            suite = suites.entity_suite(cfg, spec)
        key, outcome = context.validate(ctx, suite, df, ge_run)
        keys.append(key)
        failed.update(_failures(outcome))
        rows = _row_count(outcome)
        if spec.is_embedding and {*spec.columns, *STAT_COLUMNS} <= set(df.columns):  # else columns failed above
            day_metrics = metrics.compute(spark, cfg, spec, df.where(F.col("model_version") == model_version),
                                          day, model_version, dim)
            key, outcome = context.validate(ctx, suites.metrics_suite(cfg, spec), day_metrics.frame(), ge_run)
            keys.append(key)
            failed.update(_failures(outcome))
    finally:
        df.unpersist()
    result = TableResult(table=spec.name, rows=rows, details=failed,
                         metrics=day_metrics.scalars() if day_metrics else {}, seconds=time.perf_counter() - t0)
    return result, day_metrics, keys


def _row_count(suite_result) -> int:
    """The row count GE observed for its row-count expectation (every suite has one), without another job."""
    for r in suite_result.results:
        if r.expectation_config.type == "expect_table_row_count_to_be_between":
            return int((r.result or {}).get("observed_value") or 0)
    return 0


def _failures(suite_result) -> dict[str, str]:
    """Failed expectation name -> a short note of what GE observed (or the error it raised)."""
    out: dict[str, str] = {}
    for r in suite_result.results:
        if r.success:
            continue
        config = r.expectation_config
        out[failure_name(config.type, config.kwargs.get("column"))] = _observed(r)
    return out


def _observed(r) -> str:
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return "error: " + str(info.get("exception_message", "")).splitlines()[0][:200]
    res = r.result or {}
    if "partial_unexpected_list" in res:
        return f"observed {res['partial_unexpected_list'][:3]}"
    if res.get("observed_value") is not None:
        return f"observed {res['observed_value']}" + (" unexpected rows" if "unexpected_rows_query" in
                                                      r.expectation_config.kwargs else "")
    return ""


def _majority_version(spark: SparkSession, cfg: LfmConfig, specs: list[TableSpec], day: dt.date) -> str:
    """The model_version with most rows in the first existing embedding partition of the day."""
    for spec in specs:
        path = cfg.table_path(spec.name)
        if not table_exists(spark, path):
            continue
        top = (spark.read.format("delta").load(path).where(ds_predicate([day])).groupBy("model_version").count()
               .orderBy(F.desc("count"), "model_version").first())
        if top is not None:
            return check_model_version(top["model_version"])
    raise QualityError(f"no model_version given and no embedding partition for ds {day}: pass --model VERSION")

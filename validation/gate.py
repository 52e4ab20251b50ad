"""The quality gate of one day — the AUDIT of write-audit-publish: validate, record a verdict per table, report.

`run_gate` validates the embedding tables of one export at exactly the candidate's Delta versions (and input
tables on demand). A table passes when every expectation of its two suites (its schema; its statistics and, for
embedding tables, its day metrics) succeeds; otherwise it is quarantined. The gate only validates and records
(`validation.status`); the pipeline publishes a release when every table passed at the candidate's versions.
Each table's batch (partition plus per-row vector statistics, see `validation.batch`) is cached once; one Spark
aggregation computes every row-level check's statistic (`validation.checks`), the day metrics come from three more
queries, and the batch is released; the tables' Spark side runs `quality.concurrent_tables` tables at a time.
Then GE, one table after the other, checks each batch's schema and bounds the values in the one-row frame they
form.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES, ExportSpec
from lfm.errors import cause_line
from lfm.names import check_run_id, parse_ds
from validation import context, metrics, report, status, suites
from validation.batch import STAT_COLUMNS, read_batch, with_stats
from validation.checks import profile
from validation.errors import QualityError, QualityGateFailed
from validation.expectations import failure_name
from validation.tables import TableSpec, table_spec

log = logging.getLogger(__name__)
GATE_ERROR = "gate_error"  # the failure name of a table whose validation raised


@dataclass(frozen=True)
class TableResult:
    table: str
    rows: int  # rows in the validated partition (all model versions of the ds for an embedding table)
    details: dict[str, str]  # failed expectation name -> what GE observed, or the error it raised
    metrics: dict[str, float | None]  # day-level metrics of an embedding table (empty for input tables)
    seconds: float

    @property
    def not_applicable(self) -> tuple[str, ...]:
        """Checks the day could not make (coverage on a day with no events): neither passed nor failed."""
        return status.not_applicable(self.metrics)

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
    docs_index: Path | str  # GE Data Docs site (a local path, or its URI on the lakehouse's object store) (every run's validation pages are linked there)
    report_png: Path | str | None  # spectra and drift histograms of this run's embedding tables
    seconds: float
    export_id: str | None = None

    @property
    def quarantined(self) -> tuple[str, ...]:
        return tuple(t for t, r in self.tables.items() if not r.passed)

    @property
    def passed(self) -> bool:
        return not self.quarantined

    def summary(self) -> str:
        """A few lines for a terminal or a log: the verdict, then each quarantined table and why."""
        head = (f"quality gate ds={self.ds} export={self.export_id or '-'} model={self.model_version or '-'} "
                f"run={self.run_id}: "
                f"{len(self.tables) - len(self.quarantined)} passed, {len(self.quarantined)} quarantined "
                f"({self.seconds:.1f}s)")
        lines = [head]
        skipped = [n for n, r in self.tables.items() if r.not_applicable]
        if skipped:
            checks = sorted({c for n in skipped for c in self.tables[n].not_applicable})
            lines.append(f"  not applicable, {self.ds} had no events: {', '.join(checks)} ({', '.join(skipped)}); "
                         "every other check applied")
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


def run_gate(spark: SparkSession, cfg: LfmConfig, ds: str | dt.date, spec: ExportSpec | None = None,
             versions: dict[str, int] | None = None, tables: list[str] | tuple[str, ...] | None = None,
             run_id: str | None = None, refresh_run_id: str | None = None,
             previous_versions: dict[str, int] | None = None, events_version: int | None = None,
             model_version: str | None = None, previous_model_version: str | None = None) -> GateResult:
    """Validate `tables` (default: the four embedding tables) of day `ds` and record one verdict per table.

    Embedding tables are validated for one export (`spec`: its id, model version, widths) at exactly the Delta
    `versions` given (the candidate's); `previous_versions` pins D-1 (its release) for drift and `events_version`
    the events their coverage counts against (the version the candidate's refresh read; None: the latest);
    `model_version` the version that made the candidate (a lineage export's day; default the export's model) and
    `previous_model_version` the one that made D-1's release when it differs (version drift is measured). Any
    exception while validating a table is that table's verdict (failed, with the error): a crash never leaves an
    old pass standing.
    """
    t0 = time.perf_counter()
    day = parse_ds(ds)
    names = list(dict.fromkeys(tables or EMBEDDING_TABLES))
    specs = [table_spec(cfg, n) for n in names]
    embedding = [s for s in specs if s.is_embedding]
    if embedding and (spec is None or versions is None or any(s.name not in versions for s in embedding)):
        raise QualityError(f"the gate validates embedding tables of one export at the versions of its candidate: "
                           f"pass the export spec and the versions of {[s.name for s in embedding]}")
    run_id = check_run_id(run_id or uuid.uuid4().hex[:12])
    made_by = model_version or (spec.model_version if spec else None)
    try:
        return _gate(spark, cfg, day, spec, versions, specs, run_id, refresh_run_id, previous_versions,
                     events_version, t0, made_by, previous_model_version)
    except Exception as err:  # noqa: BLE001 - whatever broke, the day is recorded as failed, never left passed
        error = _one_line(err)
        log.debug("gate %s crash", day, exc_info=True)
        try:
            status.record(cfg, [_verdict(day, s, spec, versions, refresh_run_id, run_id, False,
                                                [GATE_ERROR], {}, error, made_by) for s in specs])
        except Exception as again:  # noqa: BLE001 - recording failed too: no verdict, which also fails closed
            log.error("gate %s: recording the failure failed as well: %s", day, _one_line(again))
        raise QualityError(f"the quality gate of {day} crashed ({error}); the day is recorded as failed and stays "
                           "unreleased: fix the cause and rerun `lfm validate`") from err


def _verdict(day: dt.date, s: TableSpec, spec: ExportSpec | None, versions: dict[str, int] | None,
             refresh_run_id: str | None, run_id: str, passed: bool, failed: list[str], metrics_: dict,
             error: str | None, made_by: str | None) -> status.StatusRow:
    emb = s.is_embedding and spec is not None
    return status.StatusRow(ds=day, table=s.name, export_id=spec.id if emb else None,
                            model_version=made_by if emb else None,
                            table_version=(versions or {}).get(s.name) if emb else None,
                            refresh_run_id=refresh_run_id if emb else None, run_id=run_id, passed=passed,
                            failed_expectations=failed, checked_at=dt.datetime.now(dt.timezone.utc),
                            metrics=metrics_, error=error)


def _gate(spark: SparkSession, cfg: LfmConfig, day: dt.date, spec: ExportSpec | None,
          versions: dict[str, int] | None, specs: list[TableSpec], run_id: str, refresh_run_id: str | None,
          previous_versions: dict[str, int] | None, events_version: int | None, t0: float,
          made_by: str | None, previous_model: str | None) -> GateResult:
    ge_run = RunIdentifier(run_name=f"{day.isoformat()}_{run_id}")
    tables = [_table(tspec, day, spec, versions, previous_versions, made_by, previous_model) for tspec in specs]
    with context.locked(cfg):
        ctx = context.get_context(cfg)
        _measure_all(spark, cfg, day, tables, events_version)
        for t in tables:  # GE, one table after the other (one context)
            _step(t, lambda t: _judge(spark, cfg, ctx, t, ge_run), after_crash=True)
            skipped = t.result().not_applicable
            log.info("gate %s %s: %s%s in %.1fs", day, t.spec.name, "passed" if not t.failed
                     else f"quarantined {list(t.failed)}",
                     f" ({', '.join(skipped)} not applicable: no events)" if skipped else "", t.seconds)
        try:
            context.build_docs(ctx, [k for t in tables for k in t.keys])
        except Exception as err:  # noqa: BLE001 - the verdicts stand; only the HTML pages are missing
            log.error("gate %s: building Data Docs failed: %s", day, _one_line(err))
    results = {t.spec.name: t.result() for t in tables}
    day_metrics = {t.spec.name: t.day_metrics for t in tables if t.day_metrics is not None}
    png = None
    if day_metrics:
        png = report.write_report(
            context.quality_root(cfg) / "reports" / day.isoformat() / f"{run_id}.png",
            f"quality gate ds={day} export={spec.id if spec else '-'} run={run_id}",
            {n: (results[n].passed, m) for n, m in day_metrics.items()}, cfg.quality.center)
    status.record(cfg, [_verdict(day, s, spec, versions, refresh_run_id, run_id, results[s.name].passed,
                                        list(results[s.name].failed), results[s.name].metrics,
                                        results[s.name].details.get(GATE_ERROR), made_by) for s in specs])
    try:
        context.publish(cfg)  # an object-store lakehouse: Data Docs, results and the PNG to <lakehouse>/_quality/
    except Exception as err:  # noqa: BLE001 - the verdicts stand; the next run copies what is missing
        log.error("gate %s: copying Data Docs and reports to the lakehouse failed: %s", day, _one_line(err))
    return GateResult(ds=day, model_version=made_by, run_id=run_id, tables=results,
                      docs_index=context.docs_index(cfg), report_png=png and context.address(cfg, png), seconds=time.perf_counter() - t0,
                      export_id=spec.id if spec else None)


def _one_line(err: BaseException) -> str:
    """The error's type and the line naming its cause (a failed Spark job's innermost exception, not its call)."""
    text = str(err).strip().splitlines()
    if text and text[0].startswith("An error occurred while calling"):  # py4j: the JVM's stack trace follows
        return f"{type(err).__name__}: {cause_line(err)[:300]}"
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


@dataclass
class _Table:
    """One table's validation as it goes: what it reads, and what it found so far (kept when a later step raises).

    `version` pins the Delta version validated and `previous_version` the one D-1's partition is read at for
    drift; `model_version`, `dim` and `export_id` are the export's (None for an input table).
    """

    spec: TableSpec
    day: dt.date
    version: int | None
    previous_version: int | None
    model_version: str | None
    dim: int | None
    export_id: str | None
    previous_model: str | None = None  # the version that made D-1 when another one made D (version drift)
    failed: dict[str, str] = field(default_factory=dict)  # failed check name -> what GE observed, or the error
    keys: list = field(default_factory=list)  # GE validation result keys, for the run's Data Docs build
    rows: int = 0
    raw: DataFrame | None = None  # the partition as stored (its schema is what the schema suite checks)
    checks: list = field(default_factory=list)
    frame: pd.DataFrame | None = None  # the one-row frame of statistics and day metrics the table suite bounds
    day_metrics: metrics.DayMetrics | None = None
    seconds: float = 0.0

    def add(self, key, outcome, frame: pd.DataFrame | None = None) -> None:
        self.keys.append(key)
        self.failed.update(_failures(outcome, frame))

    def result(self) -> TableResult:
        scalars = self.day_metrics.scalars() if self.day_metrics else {}
        return TableResult(table=self.spec.name, rows=self.rows, details=self.failed, metrics=scalars,
                           seconds=self.seconds)


def _table(tspec: TableSpec, day: dt.date, spec: ExportSpec | None, versions: dict[str, int] | None,
           previous_versions: dict[str, int] | None, made_by: str | None, previous_model: str | None) -> _Table:
    emb = tspec.is_embedding
    return _Table(tspec, day, version=(versions or {}).get(tspec.name) if emb else None,
                  previous_version=(previous_versions or {}).get(tspec.name) if emb else None,
                  model_version=made_by if emb else None, dim=spec.dim(tspec.name) if emb else None,
                  export_id=spec.id if emb else None, previous_model=previous_model if emb else None)


def _step(t: _Table, run: Callable[[_Table], None], after_crash: bool = False) -> None:
    """One step of a table's validation (after an earlier step crashed only if `after_crash`). Fails closed: an
    exception becomes a `gate_error` failure of the table (next to what the checks before it found; the first
    error is kept), never a traceback that leaves no verdict."""
    if GATE_ERROR in t.failed and not after_crash:
        return
    t0 = time.perf_counter()
    try:
        run(t)
    except Exception as err:  # noqa: BLE001 - a crash is a failed verdict, recorded with its error
        t.failed.setdefault(GATE_ERROR, _one_line(err))
        log.error("gate %s %s crashed, recorded as failed: %s", t.day, t.spec.name, t.failed[GATE_ERROR])
        log.debug("gate %s %s crash", t.day, t.spec.name, exc_info=True)
    finally:
        t.seconds += time.perf_counter() - t0


def _measure_all(spark: SparkSession, cfg: LfmConfig, day: dt.date, tables: list[_Table],
                 events_version: int | None) -> None:
    """Every table's Spark side, `quality.concurrent_tables` tables at a time: threads sharing the session, so one
    table's queries are planned and collected while another's run (a small table, a single task, would leave a
    core idle; a tiny one is mostly planning). Each thread sets its own job group (py4j gives each Python thread its
    own JVM thread); pyspark's `inheritable_thread_target` would hand them one shared properties object."""
    day_keys = metrics.DayKeys(spark, cfg, day, events_version)  # the day's event keys, read once for all tables

    def measure(t: _Table) -> None:
        with _tagged_jobs(spark, job_group(t.day, t.spec.name)):
            _step(t, lambda t: _measure(spark, cfg, t, day_keys))

    workers = min(cfg.quality.concurrent_tables, len(tables))
    try:
        if workers <= 1:
            for t in tables:
                measure(t)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lfm-gate") as pool:
                list(pool.map(measure, tables))  # `measure` never raises: a table's crash is its verdict
    finally:
        day_keys.release()


def _measure(spark: SparkSession, cfg: LfmConfig, t: _Table, day_keys: metrics.DayKeys) -> None:
    """Read the batch, cache it with its statistics, profile it in one pass and compute an embedding table's day
    metrics: the one-row frame its suite bounds."""
    t.raw = read_batch(spark, cfg, t.spec, t.day, t.model_version, version=t.version, export_id=t.export_id)
    df = with_stats(t.raw, t.spec).persist()
    try:
        t.checks = suites.table_checks(cfg, t.spec, df.columns, t.day, t.model_version, t.dim)
        values = profile(df, t.checks)  # the one pass over the batch (it also fills the cache)
        t.rows = int(values[suites.ROW_COUNT] or 0)
        day_values: dict[str, float | None] = dict.fromkeys(metrics.FRAME_COLUMNS) if t.spec.is_embedding else {}
        if t.spec.is_embedding and {*t.spec.columns, *STAT_COLUMNS} <= set(df.columns):  # else the schema failed
            part = df.where(F.col("model_version") == t.model_version)
            t.day_metrics = metrics.compute(spark, cfg, t.spec, part, t.day, t.model_version, t.dim, day_keys,
                                            t.previous_version, t.export_id, t.previous_model)
            day_values = t.day_metrics.scalars()
        t.frame = pd.DataFrame([{**values, **day_values}], dtype="float64")
    finally:
        df.unpersist()


def _judge(spark: SparkSession, cfg: LfmConfig, ctx, t: _Table, ge_run: RunIdentifier) -> None:
    """GE's verdicts: the schema suite on the batch as stored (when it could be read), the table suite on its
    one-row frame (when it was measured)."""
    with _tagged_jobs(spark, job_group(t.day, t.spec.name)):
        if t.raw is not None:
            columns, exact = suites.schema_columns(cfg, t.spec)
            t.add(*context.validate(ctx, suites.schema_suite(t.spec, columns, exact), t.raw, ge_run))
        if t.frame is not None:
            t.add(*context.validate(ctx, suites.day_suite(cfg, t.spec, t.checks), t.frame, ge_run), t.frame)


def job_group(day: dt.date, table: str) -> str:
    """The Spark job group of one table's validation (Spark's status tracker and UI count its jobs by it)."""
    return f"lfm-gate {day.isoformat()} {table}"


@contextmanager
def _tagged_jobs(spark: SparkSession, group: str) -> Iterator[None]:
    """Run the block's Spark jobs under `group`, then give the thread its previous group back."""
    sc = spark.sparkContext
    keys = ("spark.jobGroup.id", "spark.job.description")
    previous = {k: sc.getLocalProperty(k) for k in keys}
    sc.setJobGroup(group, f"quality gate: {group}")
    try:
        yield
    finally:
        for k, v in previous.items():
            sc.setLocalProperty(k, v)


def _failures(suite_result, frame: pd.DataFrame | None) -> dict[str, str]:
    """Failed expectation name -> a short note of what GE observed (or the error it raised); on the one-row
    frame, the value of the expectation's column."""
    out: dict[str, str] = {}
    for r in suite_result.results:
        if r.success:
            continue
        config = r.expectation_config
        out[failure_name(config.type, config.kwargs, config.meta)] = _observed(r, frame)
    return out


def _observed(r, frame: pd.DataFrame | None) -> str:
    """A short note of a failed result: the error GE caught, else the value it bounded (a statistic or metric of
    the one-row frame), else what it observed (counts, not example rows)."""
    info = r.exception_info or {}
    errors = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for e in errors:
        if e.get("raised_exception"):
            return "error: " + (str(e.get("exception_message", "")).splitlines() or [""])[0][:200]
    column = r.expectation_config.kwargs.get("column")
    if frame is not None and column in frame.columns:
        return f"observed {frame[column].iloc[0]:g}"
    res = r.result or {}
    if res.get("unexpected_count") is not None:
        return f"{res['unexpected_count']} of {res.get('element_count')} rows unexpected"
    if res.get("observed_value") is not None:
        return f"observed {res['observed_value']}"
    return ""

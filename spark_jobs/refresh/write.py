"""Write a computed day: the WRITE of write-audit-publish. The result is a *candidate*, not a release.

The four embedding tables go out concurrently, then the two CR states, each an atomic Delta replace of the
(ds, export_id) partition (a metadata-only swap of one folder; other days and exports are never touched), each
commit's userMetadata holding job, run id, export id, model version, CR layer, ds and the input versions. If any
write fails, the tables already written in this run are restored to their previous contents (time travel). Only
once all six committed is the candidate appended to `refresh_log` (lakehouse.candidates), naming the version of
each table; a release of the same (ds, export) is then withdrawn, because it no longer names the day's newest data.
Readers read releases at their pinned versions, so a refresh killed at any moment leaves every reader on the last
complete release.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession

from lakehouse import candidates, releases
from lakehouse.candidates import Candidate
from lakehouse.delta_io import export_predicate, replace_partitions, restore_partitions, table_version
from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES, EXPORT_TABLES, PARTITION_BY, STATE_TABLES
from spark_jobs.refresh.compute import DayOutputs
from spark_jobs.refresh.errors import PublishError, worker_message
from spark_jobs.refresh.plan import RefreshPlan

log = logging.getLogger(__name__)


def _metadata(plan: RefreshPlan, name: str, rows: int, dropped: int) -> dict:
    return {"job": "refresh", "table": name, "run_id": plan.run_id, "export_id": plan.spec.id,
            "model_version": plan.model_version, "cr_layer": plan.cr_layer, "ds": plan.ds.isoformat(),
            "cold_start": plan.cold_start, "warmup_days": plan.warmup_days, "rows": rows,
            "chained_from": plan.previous.run_id if plan.previous else None,
            "inputs": plan.input_versions, "future_events_dropped": dropped}


def write_tables(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, outputs: DayOutputs,
                 tables: tuple[str, ...] = EXPORT_TABLES) -> dict[str, int]:
    """Write the exports, then the states (two parallel waves); on a failure restore what was written, raise."""
    waves = [[n for n in EMBEDDING_TABLES if n in tables], [n for n in STATE_TABLES if n in tables]]
    predicate = export_predicate([plan.ds], plan.spec.id)
    with ThreadPoolExecutor(max_workers=len(tables)) as pool:
        before = dict(zip(tables, pool.map(lambda n: table_version(spark, cfg.table_path(n)), tables)))

        def write(name: str) -> int:
            meta = _metadata(plan, name, outputs.rows[name], outputs.future_events_dropped)
            version = replace_partitions(outputs.frames[name], cfg.table_path(name), [plan.ds], meta,
                                         extra_predicate=f"export_id = '{plan.spec.id}'", partition_by=PARTITION_BY)
            return int(version)

        written: dict[str, int] = {}
        for wave in waves:
            futures = {name: pool.submit(write, name) for name in wave}
            errors = {}
            for name, fut in futures.items():
                try:
                    written[name] = fut.result()
                except Exception as err:  # noqa: BLE001 - collected, rolled back and re-raised below
                    errors[name] = err
            if errors:
                _rollback(spark, cfg, plan, list(written), before, predicate)
                err = next(iter(errors.values()))
                detail = worker_message(err) if isinstance(err, (PySparkException, Py4JJavaError)) else str(err)[:500]
                raise PublishError(f"writing {sorted(errors)} for ds {plan.ds} failed ({detail}); the tables written "
                                   f"in this run ({sorted(written) or 'none'}) were restored to their previous "
                                   "versions") from err
    return written


def _rollback(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, names: list[str],
              before: dict[str, int | None], predicate: str) -> None:
    for name in reversed(names):
        try:
            restore_partitions(spark, cfg.table_path(name), [plan.ds], before[name],
                               {"job": "refresh-rollback", "run_id": plan.run_id, "export_id": plan.spec.id,
                                "ds": plan.ds.isoformat(), "restored_version": before[name]},
                               extra_predicate=f"export_id = '{plan.spec.id}'")
        except Exception:  # noqa: BLE001 - keep restoring the others; the log names what is left to fix
            log.exception("rollback of %s for ds %s failed: restore it from version %s (%s)", name, plan.ds,
                          before[name], predicate)


def record_candidate(cfg: LfmConfig, plan: RefreshPlan, written: dict[str, int], outputs: DayOutputs) -> Candidate:
    """Append the candidate (after every table committed), then withdraw a release it supersedes."""
    candidate = Candidate(ds=plan.ds, spec=plan.spec, run_id=plan.run_id, table_versions=written,
                          cold_start=plan.cold_start, warmup_days=plan.warmup_days,
                          input_versions=plan.input_versions, rows=outputs.rows,
                          future_events_dropped=outputs.future_events_dropped)
    candidates.append(cfg, candidate)
    if releases.release_of(cfg, plan.ds, plan.spec.id) is not None:
        releases.withdraw(cfg, plan.ds, plan.spec, plan.run_id,
                          f"rewritten by refresh run {plan.run_id}; released again once the gate passes it")
        log.info("run_id=%s ds=%s export %s: the release was withdrawn (rewritten); it returns when the gate passes "
                 "the new candidate", plan.run_id, plan.ds, plan.spec.id)
    return candidate

"""Write a computed day: the WRITE of write-audit-publish. The result is a *candidate*, not a release.

The four embedding tables go out concurrently, then the two CR states, each an atomic Delta replace of the
(ds, export_id) partition (a metadata-only swap of one folder; other days and exports are never touched), each
commit's userMetadata holding job, run id, export id, model version, CR layer, ds and the input versions. If any
write fails, the tables already written in this run are restored to their previous contents (time travel); if a
restore fails too (a full disk), `RollbackFailed` names each table and the version that still holds the run's rows.
Only once all six committed is the candidate appended to `refresh_log` (lakehouse.candidates), naming the version
of each table; a release of the same (ds, export) is then withdrawn, because it no longer names the day's newest
data.
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
from lakehouse.delta_io import TableLeases, export_predicate, replace_partitions, restore_partitions, table_version
from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES, EXPORT_TABLES, PARTITION_BY, STATE_TABLES
from lfm.errors import RollbackFailed, cause_line
from spark_jobs.refresh.compute import DayOutputs
from spark_jobs.refresh.errors import PublishError
from spark_jobs.refresh.plan import RefreshPlan

log = logging.getLogger(__name__)


def _metadata(plan: RefreshPlan, name: str, rows: int, dropped: int) -> dict:
    return {"job": "refresh", "table": name, "run_id": plan.run_id, "export_id": plan.spec.id,
            "model_version": plan.model_version, "cr_layer": plan.cr_layer, "ds": plan.ds.isoformat(),
            "cold_start": plan.cold_start, "warmup_days": plan.warmup_days, "rows": rows, "empty_day": plan.empty,
            "chained_from": plan.previous.run_id if plan.previous else None,
            "inputs": plan.input_versions, "future_events_dropped": dropped}


def write_tables(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, outputs: DayOutputs,
                 tables: tuple[str, ...] = EXPORT_TABLES) -> dict[str, int]:
    """Write the exports, then the states (two parallel waves); on a failure restore what was written, raise."""
    waves = [[n for n in EMBEDDING_TABLES if n in tables], [n for n in STATE_TABLES if n in tables]]
    predicate = export_predicate([plan.ds], plan.spec.id)
    leases = TableLeases(cfg, plan.run_id)
    with ThreadPoolExecutor(max_workers=len(tables)) as pool:
        before = dict(zip(tables, pool.map(lambda n: table_version(spark, cfg.table_path(n),
                                                                   cfg.delta_rs_options(cfg.table_path(n))), tables)))

        def write(name: str) -> int:
            meta = _metadata(plan, name, outputs.rows[name], outputs.future_events_dropped)
            version = replace_partitions(outputs.frames[name], cfg.table_path(name), [plan.ds], meta,
                                         extra_predicate=f"export_id = '{plan.spec.id}'", partition_by=PARTITION_BY,
                                         leases=leases)
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
                unrestored = _rollback(spark, cfg, plan, list(written), before, predicate, leases)
                err = next(iter(errors.values()))
                failed = f"writing {sorted(errors)} for ds {plan.ds} failed ({_detail(err)})"
                if unrestored:
                    raise _rollback_failed(plan, failed, {n: written[n] for n in unrestored}, unrestored) from err
                raise PublishError(f"{failed}; the tables written in this run ({sorted(written) or 'none'}) were "
                                   "restored to their previous versions") from err
    return written


def _detail(err: Exception) -> str:
    return cause_line(err) if isinstance(err, (PySparkException, Py4JJavaError)) else str(err)[:500]


def _rollback(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, names: list[str],
              before: dict[str, int | None], predicate: str, leases: TableLeases) -> dict[str, str]:
    """Restore each written table; returns the tables whose restore failed, with why (the others are restored)."""
    unrestored = {}
    for name in reversed(names):
        try:
            restore_partitions(spark, cfg.table_path(name), [plan.ds], before[name],
                               {"job": "refresh-rollback", "run_id": plan.run_id, "export_id": plan.spec.id,
                                "ds": plan.ds.isoformat(), "restored_version": before[name]},
                               extra_predicate=f"export_id = '{plan.spec.id}'", leases=leases)
        except Exception as err:  # noqa: BLE001 - keep restoring the others; the error names what is left
            log.exception("rollback of %s for ds %s failed: restore it from version %s (%s)", name, plan.ds,
                          before[name], predicate)
            unrestored[name] = _detail(err)
    return unrestored


def _rollback_failed(plan: RefreshPlan, failed: str, versions: dict[str, int], why: dict[str, str]) -> RollbackFailed:
    """Say that the rollback failed, which tables' latest versions hold the failed run's rows, and the fix."""
    held = "; ".join(f"{n} at version {v} (restore failed: {why[n][:200]})" for n, v in sorted(versions.items()))
    return RollbackFailed(
        f"{failed}; rolling back failed too, so these tables' latest versions hold this failed run's rows (run "
        f"{plan.run_id}, ds {plan.ds}, export {plan.spec.id}): {held}. Nothing was published: no candidate was "
        f"recorded, so readers stay on the released versions. Fix the cause (disk space, permissions), then re-run "
        f"the day, which replaces those partitions: `lfm refresh --ds {plan.ds}` (or `lfm run-daily --ds {plan.ds}`)")


def record_candidate(cfg: LfmConfig, plan: RefreshPlan, written: dict[str, int], outputs: DayOutputs) -> Candidate:
    """Append the candidate (after every table committed), then withdraw a release it supersedes."""
    candidate = Candidate(ds=plan.ds, spec=plan.spec, run_id=plan.run_id, table_versions=written,
                          cold_start=plan.cold_start, warmup_days=plan.warmup_days,
                          input_versions=plan.input_versions, rows=outputs.rows,
                          future_events_dropped=outputs.future_events_dropped, model_version=plan.model_version)
    candidates.append(cfg, candidate)
    if releases.release_of(cfg, plan.ds, plan.spec.id) is not None:
        releases.withdraw(cfg, plan.ds, plan.spec, plan.run_id,
                          f"rewritten by refresh run {plan.run_id}; released again once the gate passes it")
        log.info("run_id=%s ds=%s export %s: the release was withdrawn (rewritten); it returns when the gate passes "
                 "the new candidate", plan.run_id, plan.ds, plan.spec.id)
    return candidate

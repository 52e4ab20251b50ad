"""What the orchestrator shows per day: Dagster metadata read from the day's records (`pipeline.daystate`).

Per table the Delta version the candidate wrote and the release names, its rows, the gate's verdict and drift,
the export id and model version, where the Data Docs are; the same records `lfm status` prints.
"""
from __future__ import annotations

from typing import Any

import dagster as dg

from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES
from pipeline.daystate import DayState

Metadata = dict[str, Any]


def docs_link(cfg: LfmConfig) -> dg.MetadataValue:
    """The Great Expectations Data Docs index: a file beside a local lakehouse, a URI on an object store."""
    from validation.context import docs_index

    where = docs_index(cfg)
    return dg.MetadataValue.url(where) if isinstance(where, str) else dg.MetadataValue.path(str(where))


def export_metadata(state: DayState) -> Metadata:
    model = (state.candidate.model_version if state.candidate else None) or (state.release.model_version
                                                                             if state.release else None)
    return {"export_id": state.export_id, **({"model_version": model} if model else {})}


def candidate_metadata(state: DayState) -> Metadata:
    c = state.candidate
    if c is None:
        return export_metadata(state)
    return {**export_metadata(state), "refresh_run_id": c.run_id, "cold_start": c.cold_start,
            **{f"{t}_version": c.table_versions[t] for t in EMBEDDING_TABLES if t in c.table_versions},
            **{f"{t}_rows": c.rows[t] for t in EMBEDDING_TABLES if t in c.rows}}


def gate_metadata(cfg: LfmConfig, state: DayState) -> Metadata:
    """Per embedding table its newest verdict (at which Delta version, the failed expectations) and drift."""
    out: Metadata = {**export_metadata(state), "data_docs": docs_link(cfg)}
    for t in EMBEDDING_TABLES:
        v = state.verdicts.get(t)
        if v is None:
            out[t] = "not gated"
            continue
        at = f" at v{v.table_version}" if v.table_version is not None else ""
        out[t] = (f"passed{at}" if v.passed else f"QUARANTINED{at}: {', '.join(v.failed_expectations)}"
                  + (f" ({v.error})" if v.error else ""))
        drift = v.metrics.get("drift_mean_cosine")
        if drift is not None:
            out[f"{t}_drift_mean_cosine"] = float(drift)
    if state.quarantined:
        out["quarantined"] = ", ".join(state.quarantined)
    return out


def release_metadata(state: DayState) -> Metadata:
    r, c = state.release, state.candidate
    if r is None:
        return export_metadata(state)
    rows = c.rows if c is not None and c.run_id == r.run_id else {}
    return {**export_metadata(state), "status": r.status, "release_run_id": r.run_id,
            **({"gate_run_id": r.gate_run_id} if r.gate_run_id else {}),
            **{f"{t}_version": r.table_versions[t] for t in EMBEDDING_TABLES if t in r.table_versions},
            **{f"{t}_rows": rows[t] for t in EMBEDDING_TABLES if t in rows}}


def online_metadata(cfg: LfmConfig, state: DayState) -> Metadata:
    o = state.online
    held = (f"the release of run {o.run_id}" + (" (current)" if state.online_current else " (NOT current)")
            if o is not None else "nothing of the day")
    return {**export_metadata(state), "store": cfg.feast.online_store.value, "online": held,
            **({f"{t}_version": o.table_versions[t] for t in EMBEDDING_TABLES if t in o.table_versions}
               if o is not None else {})}


def index_metadata(state: DayState, meta: dict) -> Metadata:
    """The day's index as its marker describes it: items, kind, the IR version and release it was built from."""
    keep = ("items", "kind", "dim", "ir_version", "release_run_id")
    return {**export_metadata(state), **{k: meta[k] for k in keep if meta.get(k) is not None}}

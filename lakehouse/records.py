"""The record tables (`refresh_log`, `gate_status`, `releases`, `runs`), read and appended without Spark.

They hold a few rows per day: delta-rs (`deltalake`) reads or appends them in milliseconds where a Spark job costs
seconds, so deciding that a finished day has nothing to do, `lfm status` and `lfm retrieve` start no JVM. They are
ordinary Delta tables: Spark reads them too (Feast's source queries join `releases`). Appends are single commits,
so a crash leaves either the row or nothing; rows are never updated — the newest row of a key decides.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, QueryBuilder, write_deltalake
from deltalake.exceptions import TableNotFoundError

COMPACT_EVERY = 20  # commits between compactions of the small append files
CHECKPOINT_EVERY = "10"  # a Delta checkpoint every 10 commits: a reader replays at most 10 JSON entries


def read_records(path: str) -> pa.Table | None:
    """The whole table as Arrow, or None when it does not exist yet.

    Read by delta-rs's own engine (`QueryBuilder`), not `to_pyarrow_table`: that one scans through a pyarrow
    dataset over a Python file system, whose I/O threads can still be waiting for the GIL when the interpreter
    exits, and then the process dies of SIGABRT ("terminate called without an active exception", apache/arrow
    #34314) after its work is done.
    """
    try:
        table = DeltaTable(path)
    except TableNotFoundError:
        return None
    return pa.table(QueryBuilder().register("records", table).execute("SELECT * FROM records").read_all())


def rows(path: str) -> list[dict]:
    """The table's rows as dicts (maps become dicts); [] when it does not exist yet."""
    table = read_records(path)
    if table is None:
        return []
    maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
    out = table.to_pylist()
    for r in out:
        for m in maps:
            if r[m] is not None:
                r[m] = dict(r[m])
    return out


def newest(records: Iterable[dict], key: Callable[[dict], object], order: str) -> list[dict]:
    """The newest record (largest `order`) per `key`."""
    best: dict = {}
    for r in records:
        k = key(r)
        if k not in best or r[order] > best[k][order]:
            best[k] = r
    return list(best.values())


def write_record(path: str, records: list[dict], schema: pa.Schema, metadata: dict) -> None:
    """Append `records` in one Delta commit, with `metadata` in the commit info.

    Every append adds one small file; every `COMPACT_EVERY` commits they are compacted (a commit of its own that
    rewrites no row), so reading a year of records stays one or two file reads.
    """
    maps = [f.name for f in schema if pa.types.is_map(f.type)]
    records = [{**r, **{m: list(r[m].items()) for m in maps if isinstance(r.get(m), dict)}} for r in records]
    write_deltalake(path, pa.Table.from_pylist(records, schema), mode="append",
                    configuration={"delta.checkpointInterval": CHECKPOINT_EVERY},
                    commit_properties=CommitProperties(custom_metadata={"userMetadata": json.dumps(metadata)}))
    table = DeltaTable(path)
    if table.version() % COMPACT_EVERY == 0:
        table.optimize.compact()

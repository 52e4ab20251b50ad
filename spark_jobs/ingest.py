"""Ingest a folder in the KuaiRand release layout into the Delta tables `events` (by ds), `users`, `items`.

Everything is checked before anything is written: missing files, missing or renamed columns, values that do not
parse as their declared type, empty keys and unparseable dates each stop the run with one message that names the
file, the column and the fix. Re-ingesting a day replaces its partition atomically, so reruns never duplicate.
A daily drop carries the whole users and items files; when their bytes are those the table's current version was
ingested from (a sha256 recorded in its commit), they are neither checked nor rewritten again.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lfm.config import LfmConfig
from lfm.names import BadInput, parse_ds
from lakehouse.delta_io import commit_info, overwrite_table, replace_partitions, table_exists
from spark_jobs.layout import ITEMS_BASIC, ITEMS_STATISTIC, KUAIRAND_LAYOUT, LOG, USERS, RawFile

class IngestError(BadInput):
    """Raw input that cannot be ingested; nothing was written."""

@dataclass(frozen=True)
class IngestResult:
    events_rows: int
    days: list[dt.date]
    users_rows: int
    items_rows: int

def find_files(source: Path, raw: RawFile) -> list[Path]:
    files = sorted(source.glob(raw.pattern))
    if not files:
        raise IngestError(
            f"no {raw.role} file matching {raw.pattern!r} in {source}: point --source at a folder in the "
            "KuaiRand release layout (log_standard_*.csv, user_features_*.csv, video_features_basic_*.csv, "
            "video_features_statistic_*.csv)")
    if raw is not LOG and len(files) > 1:
        raise IngestError(f"{len(files)} files match {raw.pattern!r} in {source}; keep exactly one")
    return files

def check_header(path: Path, raw: RawFile) -> None:
    """The header must list exactly the layout's columns in order (a changed schema is refused, not guessed)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError:
        raise IngestError(f"{path} is not a UTF-8 CSV file (corrupt or compressed?)") from None
    expected = raw.names
    if header == expected:
        return
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    detail = []
    if missing:
        detail.append(f"missing columns {missing}")
    if extra:
        detail.append(f"unexpected columns {extra}")
    if not detail:
        detail.append("columns in a different order")
    raise IngestError(f"{path}: {'; '.join(detail)}; expected the {raw.role} layout {expected}")

def read_typed(spark: SparkSession, files: list[Path], raw: RawFile) -> DataFrame:
    """Read raw CSV as strings, then cast each column to its declared type (checked by `check_values`)."""
    string_schema = T.StructType([T.StructField(c, T.StringType()) for c in raw.names])
    df = (spark.read.option("header", "true").option("mode", "FAILFAST").schema(string_schema)
          .csv([str(f) for f in files]))
    return df.select(*[F.col(c).alias(f"__raw_{c}") for c in raw.names],
                     *[F.expr(f"try_cast(`{c}` AS {t})").alias(c) for c, t in raw.columns])

@dataclass(frozen=True)
class Checked:
    """What the one checking pass over a raw file found: rows, distinct keys, rows per day (the log)."""

    rows: int
    distinct_keys: int | None = None
    days: dict[dt.date | None, int] | None = None  # None: rows whose `date` is not a yyyymmdd day


def _day(cfg: LfmConfig):
    return F.expr(f"CAST(try_to_timestamp(CAST(`{cfg.schema.date}` AS STRING), 'yyyyMMdd') AS DATE)")


def check_values(df: DataFrame, raw: RawFile, files: list[Path], key: str | None = None, by=None) -> Checked:
    """One pass (one Spark job): count values that failed their cast and empty required columns (raise naming the
    worst), and the distinct `key`s (uniqueness) or the rows per value of `by` (the log's days)."""
    aggs = [F.count(F.lit(1)).alias("__rows")]
    for c, _ in raw.columns:
        aggs.append(F.sum(F.when(F.col(f"__raw_{c}").isNotNull() & F.col(c).isNull(), 1).otherwise(0)).alias(f"bad_{c}"))
    for c in raw.required:
        aggs.append(F.sum(F.when(F.col(c).isNull(), 1).otherwise(0)).alias(f"null_{c}"))
    if key is not None:
        aggs.append(F.countDistinct(key).alias("__distinct"))
    try:
        found = ([r.asDict() for r in df.groupBy(by.alias("__by")).agg(*aggs).collect()] if by is not None
                 else [df.agg(*aggs).collect()[0].asDict()])
    except (PySparkException, Py4JJavaError) as err:
        match = re.search(r"Malformed CSV record[^\n]{0,200}", str(err))
        detail = match.group(0) if match else str(err).splitlines()[0][:200]
        raise IngestError(f"{', '.join(map(str, files))}: cannot parse as CSV ({detail}); the file is corrupt or "
                          "truncated: restore it from the source and rerun") from None
    row = {k: sum(r[k] or 0 for r in found) for k in found[0] if k != "__by"} if found else {"__rows": 0}
    names = ", ".join(str(f) for f in files)
    types = dict(raw.columns)
    bad = {k[4:]: v for k, v in row.items() if k.startswith("bad_") and v}
    if bad:
        col = max(bad, key=bad.get)
        sample = df.filter(F.col(f"__raw_{col}").isNotNull() & F.col(col).isNull()).select(f"__raw_{col}").first()[0]
        raise IngestError(f"{names}: column {col!r} has {bad[col]} value(s) that are not {types[col]} "
                          f"(e.g. {sample!r}); fix the file or the layout in spark_jobs/layout.py")
    nulls = {k[5:]: v for k, v in row.items() if k.startswith("null_") and v}
    if nulls:
        col = max(nulls, key=nulls.get)
        raise IngestError(f"{names}: required column {col!r} is empty in {nulls[col]} row(s) "
                          "(a truncated file?); restore the file and rerun")
    return Checked(rows=int(row["__rows"]), distinct_keys=int(row["__distinct"]) if key is not None else None,
                   days={r["__by"]: int(r["__rows"]) for r in found} if by is not None else None)


def build_events(log: DataFrame, cfg: LfmConfig, days: list[dt.date] | None,
                 present: dict[dt.date | None, int]) -> tuple[DataFrame, list[dt.date], int]:
    """Typed events with `ds` (the local calendar day of the `date` column) and `event_timestamp`, the days they
    cover and their rows; `present` is the checking pass's rows per day (no further Spark job)."""
    s = cfg.schema
    events = log.select(*[c for c in LOG.names]).withColumn("ds", _day(cfg))
    if present.get(None):
        bad_dates = events.filter(F.col("ds").isNull()).select(s.date).limit(3).collect()
        raise IngestError(f"column {s.date!r} holds values that are not yyyymmdd dates, e.g. "
                          f"{[r[0] for r in bad_dates]}; fix the log file")
    events = events.withColumn("event_timestamp", F.timestamp_millis(F.col(s.timestamp)))
    have = sorted(d for d in present if d is not None)
    if days is None:
        return events, have, sum(present[d] for d in have)
    wanted = sorted({parse_ds(d) for d in days})
    absent = [d for d in wanted if d not in present]
    if absent:
        span = f"{have[0]}..{have[-1]}" if have else "no days"
        raise IngestError(f"no events for ds {[d.isoformat() for d in absent]} in the source (it covers {span}); "
                          "pass days the log holds")
    return events.filter(F.col("ds").isin(wanted)), wanted, sum(present[d] for d in wanted)


def digest(files: list[Path]) -> str:
    """sha256 over the files' bytes, in order: what a feature table was ingested from."""
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def unchanged_rows(spark: SparkSession, cfg: LfmConfig, table: str, sha: str) -> int | None:
    """The rows of `table` when its current version was ingested from files of this digest, else None."""
    path = cfg.table_path(table)
    if not table_exists(spark, path):
        return None
    meta = commit_info(spark, path)["userMetadata"]
    return int(meta["rows"]) if meta.get("job") == "ingest" and meta.get("sha256") == sha and "rows" in meta else None


def ingest(spark: SparkSession, cfg: LfmConfig, source: Path, days: list[dt.date] | None = None,
           run_id: str | None = None) -> IngestResult:
    """Check every raw file, then write `events` (only the given days' partitions), `users` and `items`.

    One checking pass per file (types, required columns, unique keys, the log's days) and one write per table,
    side by side: the row counts come from the checks, so nothing is read twice after the writes. A feature
    table whose current version came from the same bytes is left as it is.
    """
    source = Path(source)
    if not source.is_dir():
        raise IngestError(f"source folder {source} does not exist: pass --source DIR with the raw files")
    run_id = run_id or uuid.uuid4().hex[:12]
    s = cfg.schema
    keys = {LOG.role: None, USERS.role: s.user_key, ITEMS_BASIC.role: s.item_key, ITEMS_STATISTIC.role: s.item_key}
    found = {raw.role: find_files(source, raw) for raw in KUAIRAND_LAYOUT}
    shas = {"users": digest(found[USERS.role]),
            "items": digest(found[ITEMS_BASIC.role] + found[ITEMS_STATISTIC.role])}
    kept = {t: unchanged_rows(spark, cfg, t, sha) for t, sha in shas.items()}
    table_of = {USERS.role: "users", ITEMS_BASIC.role: "items", ITEMS_STATISTIC.role: "items"}
    frames: dict[str, DataFrame] = {}
    checked: dict[str, Checked] = {}
    for raw in KUAIRAND_LAYOUT:
        files = found[raw.role]
        for f in files:
            check_header(f, raw)
        if kept.get(table_of.get(raw.role, "")) is not None:
            continue  # the table already holds exactly these bytes, checked when they were ingested
        typed = read_typed(spark, files, raw)
        key = keys.get(raw.role) if keys.get(raw.role) in raw.names else None
        checked[raw.role] = check_values(typed, raw, files, key=key, by=_day(cfg) if raw is LOG else None)
        if key is not None and checked[raw.role].distinct_keys != checked[raw.role].rows:
            _duplicates(typed, key, raw, files)
        frames[raw.role] = typed.select(*raw.names)

    events, written_days, events_rows = build_events(frames[LOG.role], cfg, days, checked[LOG.role].days or {})
    meta = {"job": "ingest", "run_id": run_id, "source": str(source.resolve())}
    writes = [lambda: replace_partitions(events, cfg.table_path("events"), written_days,
                                         {**meta, "days": [d.isoformat() for d in written_days]})]
    rows = dict(kept)
    # At least one file per core: the refresh reads them as that many tasks without a shuffle of its own.
    files_per_table = spark.sparkContext.defaultParallelism
    if kept["users"] is None:
        rows["users"] = checked[USERS.role].rows
        users = frames[USERS.role].repartition(files_per_table)
        writes.append(lambda: overwrite_table(users, cfg.table_path("users"),
                                              {**meta, "sha256": shas["users"], "rows": rows["users"]}))
    if kept["items"] is None:
        rows["items"] = checked[ITEMS_BASIC.role].rows
        items = (frames[ITEMS_BASIC.role].join(frames[ITEMS_STATISTIC.role], on="video_id", how="left")
                 .repartition(files_per_table))
        writes.append(lambda: overwrite_table(items, cfg.table_path("items"),
                                              {**meta, "sha256": shas["items"], "rows": rows["items"]}))
    with ThreadPoolExecutor(max_workers=len(writes)) as pool:
        for fut in [pool.submit(w) for w in writes]:
            fut.result()
    return IngestResult(events_rows=events_rows, days=written_days, users_rows=rows["users"],
                        items_rows=rows["items"])


def _duplicates(df: DataFrame, key: str, raw: RawFile, files: list[Path]) -> None:
    dupes = df.groupBy(key).count().filter("count > 1").limit(3).collect()
    raise IngestError(f"{', '.join(map(str, files))}: key {key!r} is not unique (e.g. {[r[key] for r in dupes]}); "
                      "deduplicate the source file")

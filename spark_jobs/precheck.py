"""The checks of `lfm ingest` that need no Spark, run before it starts: a misspelled column costs milliseconds, not
a Spark start (25-50 s).

Checked here: the declaration against the data schema (every key, field, scenario, task and time column declared
with a type its role can use; unknown types, formats and options already failed loading lfm.yaml), every source's
files found, and, for sources on local disk, their columns: a CSV header read with the source's csv options (every
file), the Parquet schemas (every file's footer), a Delta table's schema, and a JSON lines source's field names (a
field no file names is missing). Each derived column's expression (`columns.<name>.expr`) is tokenized and the raw
columns it names are looked up (`lfm.config.sql_expr`, conservative: a word it cannot tell from a keyword is left
to Spark).
Left to Spark: what an expression means (its functions, argument types, values it fails on), values of their
declared types, tasks 0/1, keys set and unique, event times and days, duplicates, a Parquet or Delta column's type,
and any source on an object store or compressed.
"""
from __future__ import annotations

import mmap
import re
from dataclasses import dataclass
from pathlib import Path

from lfm.config import LfmConfig
from lfm.config.sources import SourceFormat, SourceRole, mapping_problems
from lfm.storage import Location, is_local, location
from spark_jobs.raw_input import IngestError, RawInput, csv_header, locate

COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".snappy", ".deflate", ".zip")  # Spark reads; we do not


@dataclass(frozen=True)
class Prechecked:
    """The sources located and checked without Spark."""

    root: Location | None  # the folder relative source paths resolved against
    located: dict[SourceRole, RawInput]
    columns_read: dict[SourceRole, str]  # source -> how its columns were read (absent: left to Spark)
    expressions: int  # derived columns whose raw columns were found

    def summary(self) -> str:
        """One line for the dry-run report: what was checked before Spark."""
        read = ", ".join(f"{r.value} ({how})" for r, how in self.columns_read.items()) or "none (left to Spark)"
        return (f"before Spark: the declaration; columns of {read}; {self.expressions} derived expression(s) "
                "against the raw columns")


def check_mapping(cfg: LfmConfig) -> None:
    problems = mapping_problems(cfg.schema, cfg.sources)
    if problems:
        raise IngestError("the sources in lfm.yaml do not provide the data schema: " + "; ".join(problems))


def source_root(cfg: LfmConfig, source: Path | str | None) -> Location | None:
    """`--source DIR` (a folder or an object-store URI), else `sources.root` (relative to the config's folder),
    else none (absolute paths only)."""
    if source is not None:
        root = location(str(source))
        if root.local and not root.path().is_dir():
            raise IngestError(f"source folder {root.uri} does not exist: pass --source DIR with the raw files")
        return root
    return cfg.location(cfg.sources.root) if cfg.sources.root else None


def precheck(cfg: LfmConfig, source: Path | str | None = None) -> Prechecked:
    """Every check that needs no Spark; raises `IngestError` naming the source, the column and the key to fix."""
    check_mapping(cfg)
    root = source_root(cfg, source)
    located = {role: locate(root, role, src) for role, src in cfg.sources.declared()}
    read, expressions = {}, 0
    for role, raw in located.items():
        found = raw_columns(raw)
        if found is None:
            continue
        how, columns = found
        _check_columns(raw, columns)
        read[role] = how
        expressions += len(raw.source.derived)
    return Prechecked(root, located, read, expressions)


def raw_columns(raw: RawInput) -> tuple[str, list[str]] | None:
    """(how, the source's raw column names) read without Spark; None where only Spark can tell."""
    if not all(is_local(f) for f in raw.files) or any(f.endswith(COMPRESSED) for f in raw.files):
        return None
    fmt = raw.source.format
    if fmt == SourceFormat.csv:
        return "csv header", csv_header(raw)
    if fmt == SourceFormat.parquet:
        return "parquet schema", _parquet_columns(raw)
    if fmt == SourceFormat.delta:
        return "delta schema", _delta_columns(raw)
    return "json fields", _json_columns(raw)


def _check_columns(raw: RawInput, columns: list[str]) -> None:
    src = raw.source
    missing = [c for c in src.raw_names if c not in columns]
    if missing:
        shown = f"has {columns}" if raw.source.format != SourceFormat.json else "(no record has them)"
        raise IngestError(f"{raw.label}: missing columns {missing} {shown}: fix the source or "
                          f"sources.{raw.role.value}.columns (`raw:` names a column the source calls otherwise)")
    for name, col in src.columns.items():
        unknown = col.references.missing(columns)
        if col.expr and unknown:
            raise IngestError(f"{raw.label}: sources.{raw.role.value}.columns.{name}.expr {col.expr!r} reads "
                              f"{unknown}, which the source does not have; its raw columns are "
                              + (f"{columns}" if raw.source.format != SourceFormat.json else "its records' fields"))


def _parquet_columns(raw: RawInput) -> list[str]:
    """Every file's columns, in order of first appearance (a column one file has is read from it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, None] = {}
    for f in raw.files:
        try:
            columns.update(dict.fromkeys(pq.read_schema(f).names))
        except (pa.ArrowInvalid, OSError) as err:
            raise IngestError(f"{f} is not a Parquet file ({str(err).splitlines()[0][:120]}): corrupt or "
                              f"truncated? restore it, or fix sources.{raw.role.value}.format") from None
    return list(columns)


def _delta_columns(raw: RawInput) -> list[str]:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return [f.name for f in DeltaTable(raw.files[0]).schema().fields]
    except TableNotFoundError:
        raise IngestError(f"{raw.label}: not a Delta table; fix sources.{raw.role.value}.path or its format") from None


def _json_columns(raw: RawInput) -> list[str]:
    """The declared and referenced fields some record names (`"field":` in a file's bytes; a field that appears
    only as text inside a value is taken as present, so this never refuses what Spark reads)."""
    src = raw.source
    wanted = list(dict.fromkeys(src.raw_names + [n for c in src.columns.values() for n in sorted(c.references.names)]))
    return [name for name in wanted if any(_names_field(Path(f), name) for f in raw.files)]


def _names_field(path: Path, name: str) -> bool:
    pattern = re.compile(b'"' + re.escape(name.encode()) + rb'"\s*:')
    with path.open("rb") as fh:
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return pattern.search(data) is not None
        except ValueError:  # an empty file names nothing
            return False

"""Read one declared raw source (`sources.<role>` in lfm.yaml) into its typed lakehouse columns, checked.

Every problem stops with an `IngestError` that names the source, the column, the config key to change and a
sample bad value: no file matching the path, a declared column missing (or, for `exact_columns`, an unexpected
one), a column whose source type cannot become the declared type, values that do not parse, task values that are
not 0/1 or true/false, empty keys, a derived column's expression (`columns.<name>.expr`) that Spark cannot resolve
or that fails on a value. Nothing here writes; ingest writes only after every source passed.
"""
from __future__ import annotations

import csv
import glob
import re
from dataclasses import dataclass
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lfm.config.sources import ColumnType, CsvOptions, Source, SourceFormat, SourceRole, config_key
from lfm.names import BadInput
from lfm.storage import Location, is_local, location
from lakehouse.delta_io import read_table, table_exists


class IngestError(BadInput):
    """Raw input that cannot be ingested; nothing was written."""


@dataclass(frozen=True)
class RawInput:
    """A declared source with its files found (a Delta table or an object-store glob is one entry)."""

    role: SourceRole
    source: Source
    files: list[str]

    @property
    def spark_files(self) -> list[str]:
        """The files as Spark reads them (`s3a://` for an S3-API store)."""
        return [location(f).for_spark() for f in self.files]

    @property
    def label(self) -> str:
        shown = ", ".join(self.files[:3]) + (f" (+{len(self.files) - 3} more)" if len(self.files) > 3 else "")
        return f"sources.{self.role.value} ({shown})"


@dataclass(frozen=True)
class ColumnRules:
    """What the data schema asks of a source's columns beyond their declared types."""

    tasks: frozenset[str] = frozenset()  # 0/1 or boolean columns, stored as int 0/1
    required: tuple[str, ...] = ()  # columns that must never be empty (keys, scenario, times)
    unique: str | None = None  # a key that must not repeat (users, items, item statistics)
    timezone: str = "UTC"  # wall-clock timestamps (text without an offset, TIMESTAMP_NTZ) are local to this zone


def locate(root: Location | None, role: SourceRole, src: Source) -> RawInput:
    """The files of a source: its path (a file, a glob or a folder) under `root` unless absolute or a URI."""
    if not is_local(src.path):
        return RawInput(role, src, [src.path])  # an object store: Spark lists it
    path = Path(src.path).expanduser()
    if not path.is_absolute():
        if root is None:
            raise IngestError(f"sources.{role.value}.path {src.path!r} is relative and no folder was given: pass "
                              "--source DIR or set sources.root in lfm.yaml")
        if not root.local:
            return RawInput(role, src, [root.child(src.path).uri])  # under an object-store folder: Spark lists it
        path = root.path() / path
    if src.format == SourceFormat.delta or path.is_dir():
        if not path.exists():
            raise IngestError(f"no {role.value} {src.format.value} source at {path}: fix sources.{role.value}.path "
                              "(or --source / sources.root)")
        files = [str(path)] if src.format == SourceFormat.delta else sorted(
            str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    else:
        files = sorted(glob.glob(str(path)))
    if not files:
        raise IngestError(f"no {role.value} file matching {src.path!r} in {root if root else path.parent}: point "
                          f"--source (or sources.root) at the folder holding it, or fix sources.{role.value}.path")
    return RawInput(role, src, files)


def read_source(spark: SparkSession, raw: RawInput, rules: ColumnRules) -> DataFrame:
    """The declared columns, typed, plus a `__raw_<name>` twin of each (for the value checks)."""
    fmt = raw.source.format
    if fmt == SourceFormat.csv:
        df = _read_csv(spark, raw)
    elif fmt == SourceFormat.json:
        # Every declared field read as text (numbers and booleans as their JSON text), then cast like CSV.
        fields = raw.source.raw_names + raw.source.expression_names  # absent fields read as null
        schema = T.StructType([T.StructField(c, T.StringType()) for c in fields])
        df = spark.read.option("mode", "FAILFAST").schema(schema).json(raw.spark_files)
    elif fmt == SourceFormat.delta:
        if not table_exists(spark, raw.files[0]):
            raise IngestError(f"{raw.label}: not a Delta table; fix sources.{raw.role.value}.path or its format")
        df = read_table(spark, raw.files[0])
    else:
        df = spark.read.parquet(*raw.spark_files)
    missing = [c for c in raw.source.raw_names if c not in df.columns]
    if missing:
        raise IngestError(f"{raw.label}: missing columns {missing}; has {df.columns}: fix the source or "
                          f"sources.{raw.role.value}.columns (`raw:` names a column the source calls otherwise)")
    df = _with_derived(df, raw)
    out = []
    for name in raw.source.columns:
        rawc = F.col(f"`{_input(raw.source, name)}`")
        native = df.schema[_input(raw.source, name)].dataType
        out += [rawc.alias(f"__raw_{name}"), typed(raw, name, native, rules).alias(name)]
    return df.select(*out)


def _input(src: Source, name: str) -> str:
    """The frame column a declared column is read from: its raw column, or its expression's value."""
    col = src.columns[name]
    return f"__expr_{name}" if col.expr else col.raw or name


def _with_derived(df: DataFrame, raw: RawInput) -> DataFrame:
    """The frame with each derived column's expression value (`__expr_<name>`), resolved against the raw columns."""
    for name, expr in raw.source.derived.items():
        try:
            df = df.withColumn(f"__expr_{name}", F.expr(expr))
        except PySparkException as err:
            detail = str(err).splitlines()[0][:300]
            raise IngestError(f"{raw.label}: {config_key(raw.role, name, 'expr')} {expr!r} does not read against "
                              f"the source ({detail}); its raw columns are {df.columns}") from None
    return df


def typed(raw: RawInput, name: str, native: T.DataType, rules: ColumnRules) -> SparkColumn:
    """The lakehouse value of one column: a null where the source value does not read as the declared type (a
    derived column's value is cast to it)."""
    col = raw.source.columns[name]
    source = _input(raw.source, name)
    x = F.col(f"`{source}`")
    if name in rules.tasks:
        return _binary(raw, name, native, x)
    if col.expr is None:
        _check_native(raw, name, native)
    if col.type == ColumnType.timestamp:
        if isinstance(native, T.TimestampType):
            return x
        wall = x.cast("timestamp_ntz") if isinstance(native, T.TimestampNTZType) else \
            F.expr(f"try_cast(`{source}` AS TIMESTAMP_NTZ)")
        local = F.convert_timezone(F.lit(rules.timezone), F.current_timezone(), wall).cast("timestamp")
        if isinstance(native, T.StringType):  # text with an explicit offset is an instant already
            offset = x.rlike(r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$")
            return F.when(offset, F.expr(f"try_cast(`{source}` AS TIMESTAMP)")).otherwise(local)
        return local
    return F.expr(f"try_cast(`{source}` AS {col.type.sql})")


def derive_hint(raw: RawInput, name: str) -> str:
    """The fix for a task column that is not a 0/1 label (its type cannot make it one): derive it."""
    col, key = raw.source.columns[name], f"sources.{raw.role.value}.columns.{name}"
    if col.expr:
        return f"a task is a 0/1 (or true/false) label: make {key}.expr a condition, e.g. \"({col.expr}) >= 4\""
    return (f"a task is a 0/1 (or true/false) label: derive it from the raw column with an expression, e.g. "
            f"{key}: {{expr: \"{col.raw or name} >= 4\", type: boolean}}")


def _binary(raw: RawInput, name: str, native: T.DataType, x: SparkColumn) -> SparkColumn:
    """A task label as int 0/1 from 0/1 numbers, booleans or their text; null where it is anything else."""
    if isinstance(native, T.BooleanType):
        return x.cast("int")
    if isinstance(native, T.NumericType):
        return F.when(x == 1, F.lit(1)).when(x == 0, F.lit(0))
    if not isinstance(native, T.StringType):
        raise IngestError(f"{raw.label}: task {raw.source.shown(name)} is {native.simpleString()}, not 0/1 or "
                          f"boolean; {derive_hint(raw, name)}")
    v = F.lower(F.trim(x))
    return (F.when(v.isin("1", "1.0", "true", "t", "yes", "y"), F.lit(1))
            .when(v.isin("0", "0.0", "false", "f", "no", "n"), F.lit(0)))


_COMPLEX = (T.ArrayType, T.MapType, T.StructType, T.BinaryType)
_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType)
_READS_AS = {  # source types (besides text, which is parsed) that become the declared type without loss
    ColumnType.int: _INTEGRAL,
    ColumnType.bigint: _INTEGRAL + (T.LongType,),
    ColumnType.double: (T.NumericType,),
    ColumnType.boolean: (T.BooleanType,),
    ColumnType.date: (T.DateType,),
    ColumnType.timestamp: (T.TimestampType, T.TimestampNTZType),
}
_SUGGEST = {T.LongType: "bigint", T.DoubleType: "double", T.FloatType: "double", T.DecimalType: "double",
            T.BooleanType: "boolean", T.DateType: "date", T.TimestampType: "timestamp",
            T.TimestampNTZType: "timestamp"}


def _check_native(raw: RawInput, name: str, native: T.DataType) -> None:
    """A typed source (Parquet, Delta) column must read as the declared type without loss; text is parsed."""
    want = raw.source.columns[name].type
    if isinstance(native, T.StringType):
        return
    ok = not isinstance(native, _COMPLEX) if want == ColumnType.string else isinstance(native, _READS_AS[want])
    if ok:
        return
    hint = next((v for k, v in _SUGGEST.items() if isinstance(native, k)), None)
    raise IngestError(f"{raw.label}: {raw.source.shown(name)} is {native.simpleString()} in the source "
                      f"and does not read as {want.sql} without loss: change {config_key(raw.role, name)}"
                      + (f" (e.g. to {hint})" if hint else ""))


def _read_csv(spark: SparkSession, raw: RawInput) -> DataFrame:
    """Every column as text under the source's own header (one header for all files, checked first), read with
    the source's delimiter, quote and null marker (`sources.<role>.csv`); without a header row, the columns are the
    declared ones in their declared order."""
    opts = raw.source.csv
    reader = spark.read.option("sep", opts.delimiter).option("quote", opts.quote).option("nullValue", opts.null_value)
    if not is_local(raw.files[0]):  # an object store: Spark reads the first file's first row
        header = check_headers(raw, {raw.files[0]: reader.option("header", "true").csv(raw.spark_files[0]).columns})
    else:
        header = csv_header(raw)
    schema = T.StructType([T.StructField(c, T.StringType()) for c in header])
    return (reader.option("header", str(opts.header).lower()).option("mode", "FAILFAST").schema(schema)
            .csv(raw.spark_files))


def csv_header(raw: RawInput) -> list[str]:
    """The columns of a local CSV source, from the first row of each file with its csv options (no Spark)."""
    return check_headers(raw, {f: _first_row(Path(f), raw.source.csv) for f in raw.files})


def check_headers(raw: RawInput, headers: dict[str, list[str]]) -> list[str]:
    """The source's columns: its first file's header (every file's the same, holding the declared columns), or
    the declared raw columns in order when the files have no header row."""
    opts = raw.source.csv
    header = headers[raw.files[0]] if opts.header else raw.source.raw_names
    for f, h in headers.items():
        if opts.header:
            _check_header(raw, f, h)
        elif len(h) != len(header):
            raise IngestError(f"{f}: its first row has {len(h)} fields where sources.{raw.role.value}.columns "
                              f"declares {len(header)} ({header}; csv.header: false reads them in that order): "
                              f"it {_read_as(opts, h)}")
        if opts.header and h != header:
            raise IngestError(f"{f}: its header differs from {raw.files[0]}'s; every file of "
                              f"sources.{raw.role.value} must have the same columns in the same order")
    return header


def _first_row(path: Path, opts: CsvOptions) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh, delimiter=opts.delimiter, quotechar=opts.quote), [])
    except UnicodeDecodeError:
        raise IngestError(f"{path} is not a UTF-8 CSV file (corrupt or compressed?)") from None


def _read_as(opts: CsvOptions, row: list[str]) -> str:
    """What the first row read as, and the likely fix when another delimiter splits it better."""
    text = f"reads as {row} with delimiter {opts.delimiter!r}"
    joined = opts.delimiter.join(row)
    better = max((d for d in ("\t", ",", ";", "|") if d != opts.delimiter), key=joined.count)
    if joined.count(better) > 0 and len(row) <= 1:
        shown = "\\t" if better == "\t" else better
        text += f"; the file looks {better!r}-separated: set csv: {{delimiter: \"{shown}\"}} on the source"
    return text


def _check_header(raw: RawInput, path: str, header: list[str]) -> None:
    """Declared raw columns present; with `exact_columns`, exactly them in order (a changed layout is refused)."""
    expected = raw.source.raw_names
    missing = [c for c in expected if c not in header]
    read = set(expected) | set(raw.source.expression_columns(header))  # the expressions' columns are declared too
    extra = [c for c in header if c not in read] if raw.source.exact_columns else []
    in_order = [c for c in header if c in expected] == expected
    if not missing and not extra and (in_order or not raw.source.exact_columns):
        return
    detail = []
    if missing:
        detail.append(f"missing columns {missing}")
    if extra:
        detail.append(f"unexpected columns {extra}")
    if not detail:
        detail.append("columns in a different order")
    raise IngestError(f"{path}: {'; '.join(detail)}; sources.{raw.role.value}.columns declares {expected}"
                      + (" (exact_columns: true)" if raw.source.exact_columns else "")
                      + f"; its header {_read_as(raw.source.csv, header)}")


@dataclass(frozen=True)
class Checked:
    """What the one checking pass over a source found: its aggregates (summed over groups) and, when grouped,
    each group's own (the events' days; None: rows whose day does not parse)."""

    stats: dict
    groups: dict | None = None  # group -> its aggregates

    @property
    def rows(self) -> int:
        return int(self.stats["__rows"] or 0)

    def per_group(self, name: str = "__rows") -> dict:
        """One aggregate by group (rows by default): what the days asked for add up from."""
        return {g: int(agg[name] or 0) for g, agg in (self.groups or {}).items()}


def check_values(df: DataFrame, raw: RawInput, rules: ColumnRules, extra: tuple[SparkColumn, ...] = (),
                 by: SparkColumn | None = None) -> Checked:
    """One pass (one Spark job): values that did not read as their type, empty required columns, a repeated key;
    raise naming the worst. `extra` aggregates (aliases starting with `__`) come back summed over the groups of
    `by` when it is given (so they must add up), with the rows per group."""
    names = list(raw.source.columns)
    aggs = [F.count(F.lit(1)).alias("__rows"), *extra]
    if rules.unique:
        aggs.append(F.count_distinct(F.col(rules.unique)).alias("__distinct"))
    aggs += [F.sum(F.when(F.col(f"__raw_{c}").isNotNull() & F.col(c).isNull(), 1).otherwise(0)).alias(f"bad_{c}")
             for c in names]
    aggs += [F.sum(F.when(F.col(c).isNull(), 1).otherwise(0)).alias(f"null_{c}") for c in rules.required]
    if raw.source.format == SourceFormat.json:  # a JSON field no record has reads as null, not as an error
        aggs += [F.count(F.col(f"__raw_{c}")).alias(f"seen_{c}") for c in names if not raw.source.columns[c].expr]
    try:
        if by is None:
            found, groups = [df.agg(*aggs).collect()[0].asDict()], None
        else:
            found = [r.asDict() for r in df.groupBy(by.alias("__by")).agg(*aggs).collect()]
            groups = {r.pop("__by"): dict(r) for r in found}
    except (PySparkException, Py4JJavaError) as err:
        text = str(err)
        failed = [n for n, e in raw.source.derived.items() if e in text]
        if failed and not re.search(r"Malformed (CSV|JSON) record|Malformed records", text):
            raise IngestError(f"{raw.label}: the expression of {config_key(raw.role, failed[0], 'expr')} "
                              f"({raw.source.derived[failed[0]]!r}) fails on a value: {_spark_error(text)}; a csv "
                              "or json source's columns are text: read them with try_cast(column AS DOUBLE) (null "
                              "where a value is not a number), or fix the file") from None
        match = re.search(r"Malformed (CSV|JSON) record[^\n]{0,200}|Malformed records[^\n]{0,200}", text)
        detail = match.group(0) if match else text.splitlines()[0][:200]
        raise IngestError(f"{raw.label}: cannot parse as {raw.source.format.value} ({detail}); the file is corrupt or "
                          "truncated: restore it from the source and rerun") from None
    row = found[0] if by is None else {k: sum(r[k] or 0 for r in found) for k in (found[0] if found else {})}
    row.setdefault("__rows", 0)
    unseen = [raw.source.raw_name(k[5:]) for k, v in row.items() if k.startswith("seen_") and not v]
    if unseen and row["__rows"]:
        raise IngestError(f"{raw.label}: missing columns {unseen} (no record has them): fix the source or "
                          f"sources.{raw.role.value}.columns (`raw:` names a field the source calls otherwise)")
    bad = {k[4:]: v for k, v in row.items() if k.startswith("bad_") and v}
    if bad:
        col = max(bad, key=bad.get)
        sample = df.filter(F.col(f"__raw_{col}").isNotNull() & F.col(col).isNull()).select(f"__raw_{col}").first()[0]
        what = f"{raw.label}: {raw.source.shown(col)} has {bad[col]} value(s) that are not"
        if col in rules.tasks:
            raise IngestError(f"{what} 0/1 or true/false (e.g. {sample!r}); {derive_hint(raw, col)}; or fix the file")
        raise IngestError(f"{what} {raw.source.columns[col].type.sql} (e.g. {sample!r}); fix the file or "
                          f"{config_key(raw.role, col)} in lfm.yaml")
    nulls = {k[5:]: v for k, v in row.items() if k.startswith("null_") and v}
    if nulls:
        col = max(nulls, key=nulls.get)
        raise IngestError(f"{raw.label}: required {raw.source.shown(col)} is empty in {nulls[col]} row(s) "
                          "(a truncated file?); restore the file and rerun")
    if not row["__rows"]:
        raise IngestError(f"{raw.label}: no rows; fix sources.{raw.role.value}.path")
    if rules.unique and row["__distinct"] < row["__rows"]:
        key = rules.unique
        dupes = [r[key] for r in df.groupBy(key).count().filter("count > 1").limit(3).collect()]
        raise IngestError(f"{raw.label}: key {key!r} is not unique (e.g. {dupes}); deduplicate the source file")
    return Checked(row, groups)


def _spark_error(text: str) -> str:
    """The first line of a Spark error, its error class kept, the JVM stack left out."""
    match = re.search(r"\[[A-Z_.]+\][^\n]{0,200}", text)
    return match.group(0) if match else text.splitlines()[0][:200]

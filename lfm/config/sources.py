"""Where the raw data comes from and how its columns become the data schema's (`sources:` in lfm.yaml).

Four sources: `events` (the interaction log), `users`, `items` and an optional `item_statistics` (joined to the
items on the item key). Each names a path or glob (relative to `sources.root`, or to `lfm ingest --source DIR`),
a format, and its columns: the lakehouse name, the declared type and, where it differs, the raw name. Ingest
keeps exactly the declared columns, so what reaches the lakehouse is what the config says.

Nothing here knows KuaiRand: its release layout is one declaration (`lfm.config.kuairand`), filled in when
lfm.yaml declares no source. `mapping_problems` checks a declaration against the data schema (every key, field,
scenario, task and time column declared, with a type its role can use) before any data is read.
"""
from __future__ import annotations

import re
from enum import Enum

from pydantic import field_validator, model_validator

from lfm.config.kuairand import KUAIRAND_SOURCES
from lfm.config.schema import DataSchema, FieldKind, Strict
from lfm.config.sql_expr import References, references

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED = ("ds", "event_timestamp", "valid_from")  # columns ingest adds; a source cannot declare them


class SourceRole(str, Enum):
    """The four inputs; the value is the key under `sources:`."""

    events = "events"
    users = "users"
    items = "items"
    item_statistics = "item_statistics"


class SourceFormat(str, Enum):
    csv = "csv"  # a header row; values are read as text and cast to the declared types
    parquet = "parquet"
    json = "json"  # JSON lines: one object per line
    delta = "delta"  # an existing Delta table (path = its folder)


class ColumnType(str, Enum):
    """The lakehouse type of a column (Spark SQL)."""

    int = "int"
    bigint = "bigint"
    double = "double"
    string = "string"
    boolean = "boolean"
    date = "date"
    timestamp = "timestamp"

    @property
    def sql(self) -> str:
        return self.value.upper()


class KeyType(str, Enum):
    """How an entity key is held past ingest (Feast's entity value type, the online store's key bytes, every cast
    of the key column): derived from the key's declared column type alone (`LfmConfig.key_type`)."""

    int64 = "int64"  # declared int or bigint
    string = "string"  # declared string

    @property
    def spark(self) -> str:
        """The Spark SQL type the key column is cast to where it is read for serving."""
        return "bigint" if self is KeyType.int64 else "string"


class TimeUnit(str, Enum):
    """How the event-time column holds an instant."""

    s = "s"  # epoch seconds (int or double)
    ms = "ms"  # epoch milliseconds
    us = "us"  # epoch microseconds
    timestamp = "timestamp"  # a timestamp (text without an offset is a wall-clock time in schema.timezone)


class DuplicatePolicy(str, Enum):
    """What ingest does with exact duplicate events: rows equal in every declared column, in the days it writes
    (a log may hold true repeats, e.g. KuaiRand's, or a drop may hold a file appended twice)."""

    keep = "keep"  # write them as they are (counted and reported)
    drop = "drop"  # write one copy of each
    refuse = "refuse"  # stop the ingest naming the files, days and count; nothing is written


NUMERIC = (ColumnType.int, ColumnType.bigint, ColumnType.double)
KEY_TYPES = (ColumnType.int, ColumnType.bigint, ColumnType.string)
TASK_TYPES = (ColumnType.int, ColumnType.bigint, ColumnType.boolean, ColumnType.string)  # 0/1 or true/false
DATE_TYPES = (ColumnType.date, ColumnType.int, ColumnType.bigint, ColumnType.string)


class Column(Strict):
    """A declared column: read from a raw column (`raw`, default its own name) or derived from the raw columns by a
    Spark SQL expression (`expr`, e.g. "rating >= 4" or "'all'"), whose value is cast to `type`."""

    type: ColumnType = ColumnType.string
    raw: str | None = None  # the column's name in the source, when it differs from the lakehouse name
    expr: str | None = None  # a Spark SQL expression over the source's raw columns; no raw column then

    @field_validator("raw")
    @classmethod
    def _raw_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "`" in v):
            raise ValueError("a raw column name must be non-empty and hold no backtick")
        return v

    @field_validator("expr")
    @classmethod
    def _expression(cls, v: str | None) -> str | None:
        if v is not None:
            references(v)  # raises naming what does not tokenize
        return v

    @model_validator(mode="after")
    def _raw_or_expr(self) -> "Column":
        if self.raw is not None and self.expr is not None:
            raise ValueError("give `raw:` (a column of the source) or `expr:` (an expression over its columns), "
                             "not both")
        return self

    @property
    def references(self) -> References:
        """The raw columns the expression reads (none for a plain column)."""
        return references(self.expr) if self.expr else References(frozenset(), frozenset())


class CsvOptions(Strict):
    """How a delimited text source is written: the options every CSV reader has (`sources.<role>.csv`)."""

    delimiter: str = ","  # "\t" for a tab-separated file
    header: bool = True  # false: no header row; the columns are the declared ones, in their declared order
    quote: str = '"'
    null_value: str = ""  # the text that stands for a missing value (e.g. "\\N" or "NA"); "" reads as null too

    @field_validator("delimiter", "quote")
    @classmethod
    def _one_character(cls, v: str) -> str:
        if len(v) != 1 or v in "\r\n":
            raise ValueError(f"must be one character other than a line break, got {v!r} (a tab is \"\\t\")")
        return v


class Source(Strict):
    """One raw input: where it is, its format, and its columns (lakehouse name -> type, raw name)."""

    path: str  # a file, a glob (`logs/*.csv`) or a folder; a Delta table's folder for format delta
    format: SourceFormat = SourceFormat.csv
    columns: dict[str, Column]  # in order; `name: TYPE` is short for `name: {type: TYPE}`
    exact_columns: bool = False  # csv: the header must list exactly these raw names, in this order
    csv: CsvOptions = CsvOptions()  # format csv: delimiter, header, quote, null marker

    @model_validator(mode="after")
    def _csv_options_for_csv(self) -> "Source":
        if "csv" in self.model_fields_set and self.format != SourceFormat.csv:
            raise ValueError(f"`csv:` options apply to format csv, not {self.format.value}: remove them")
        if self.csv.delimiter == self.csv.quote:
            raise ValueError("csv.delimiter and csv.quote must differ")
        return self

    @field_validator("columns", mode="before")
    @classmethod
    def _shorthand(cls, v: object) -> object:
        if isinstance(v, dict):
            return {k: {"type": c} if isinstance(c, str) else c for k, c in v.items()}
        return v

    @field_validator("columns")
    @classmethod
    def _names(cls, v: dict[str, Column]) -> dict[str, Column]:
        if not v:
            raise ValueError("declare at least one column")
        bad = [n for n in v if not _NAME.match(n)]
        if bad:
            raise ValueError(f"lakehouse column names must be letters, digits and '_' (not starting with a digit): "
                             f"{bad}")
        reserved = [n for n in v if n in RESERVED]
        if reserved:
            raise ValueError(f"{reserved} are added by ingest; give the raw column another name (`raw:`)")
        raws = [c.raw or n for n, c in v.items() if c.expr is None]
        twice = sorted({r for r in raws if raws.count(r) > 1})
        if twice:
            raise ValueError(f"raw columns mapped twice: {twice}")
        return v

    def raw_name(self, name: str) -> str:
        """The source column a declared column reads, or `= EXPR` for a derived one."""
        col = self.columns[name]
        return f"= {col.expr}" if col.expr else col.raw or name

    def shown(self, name: str) -> str:
        """How a message names the column: `column 'clicked'`, or `derived column 'click' (= rating >= 4)`."""
        col = self.columns[name]
        return f"derived column {name!r} ({self.raw_name(name)})" if col.expr else f"column {self.raw_name(name)!r}"

    @property
    def raw_names(self) -> list[str]:
        """The raw columns the plain (not derived) columns read, in declared order."""
        return [c.raw or n for n, c in self.columns.items() if c.expr is None]

    @property
    def derived(self) -> dict[str, str]:
        """Lakehouse name -> expression of the derived columns."""
        return {n: c.expr for n, c in self.columns.items() if c.expr is not None}

    def expression_columns(self, available: list[str]) -> list[str]:
        """The columns of `available` the expressions read (beyond the plain columns), in that order."""
        plain = set(self.raw_names)
        read = {c for col in self.columns.values() for c in col.references.present(available)}
        return [c for c in available if c in read and c not in plain]

    @property
    def expression_names(self) -> list[str]:
        """Every name the expressions may read (sure references and keyword-like words): a JSON source's fields."""
        seen = {n.lower() for n in self.raw_names}
        out = []
        for n in sorted({n for col in self.columns.values() for n in col.references.names | col.references.maybe}):
            if n.lower() not in seen:  # Spark resolves names case-insensitively: one field per name
                seen.add(n.lower())
                out.append(n)
        return out


class EventSource(Source):
    # How the schema.timestamp column holds an instant: no default, since epoch numbers do not say their unit (a
    # column declared `timestamp` needs none); KuaiRand's layout says ms.
    time_unit: TimeUnit | None = None
    date_format: str = "yyyyMMdd"  # of the schema.date column when it is not of type date (Spark pattern)
    duplicates: DuplicatePolicy = DuplicatePolicy.keep  # exact duplicate events in the days ingested

    def unit_of_time(self, column: str) -> TimeUnit | None:
        """The event time `column`'s unit: `time_unit`, else `timestamp` for a column declared of type timestamp;
        None when a numeric time's unit is not said (`mapping_problems` names the key)."""
        if self.time_unit is not None:
            return self.time_unit
        declared = self.columns.get(column)
        return TimeUnit.timestamp if declared is not None and declared.type == ColumnType.timestamp else None


EVENT_POLICIES = ("duplicates",)  # keys of sources.events that set a policy, not the layout


def _policies_only(events: object) -> bool:
    """sources.events absent or holding policies only: `events: {duplicates: drop}` keeps the KuaiRand layout."""
    return events is None or (isinstance(events, dict) and set(events) <= set(EVENT_POLICIES))


class Sources(Strict):
    """Declaring none of the four sources means the KuaiRand-Pure release layout (`lfm.config.kuairand`); its
    events' policies (`EVENT_POLICIES`) may still be set."""

    root: str | None = None  # folder that relative source paths resolve against; `--source DIR` overrides it
    events: EventSource
    users: Source
    items: Source
    item_statistics: Source | None = None

    @model_validator(mode="before")
    @classmethod
    def _kuairand_by_default(cls, data: object) -> object:
        others = [r.value for r in SourceRole if r != SourceRole.events]
        if isinstance(data, dict) and not any(r in data for r in others) and _policies_only(data.get("events")):
            events = {**KUAIRAND_SOURCES["events"], **(data.get("events") or {})}
            return {**KUAIRAND_SOURCES, **data, "events": events}
        return data

    def declared(self) -> list[tuple[SourceRole, Source]]:
        out = [(SourceRole.events, self.events), (SourceRole.users, self.users), (SourceRole.items, self.items)]
        if self.item_statistics is not None:
            out.append((SourceRole.item_statistics, self.item_statistics))
        return out


def default_sources() -> Sources:
    return Sources.model_validate({})


def config_key(role: SourceRole, column: str | None = None, attr: str = "type") -> str:
    """The lfm.yaml key a user changes, e.g. `sources.events.columns.ts.type`."""
    return f"sources.{role.value}" + (f".columns.{column}.{attr}" if column else "")


KEY_SOURCES = {"user": (SourceRole.users, SourceRole.events),
               "item": (SourceRole.items, SourceRole.item_statistics, SourceRole.events)}


def declared_key_type(schema: DataSchema, sources: Sources, side: str) -> KeyType:
    """The key type of one entity side ('user' or 'item'), from the declared type of its key column in the sources
    that hold it; a ValueError naming the config key when it is undeclared, not a key type, or declared both as
    text and as a number."""
    if side not in KEY_SOURCES:
        raise ValueError(f"entity side {side!r}: use 'user' or 'item'")
    key = schema.user_key if side == "user" else schema.item_key
    what = "schema.user_key" if side == "user" else "schema.item_key"
    by_role = dict(sources.declared())
    types = {r: by_role[r].columns[key].type for r in KEY_SOURCES[side] if r in by_role and key in by_role[r].columns}
    if not types:
        role = KEY_SOURCES[side][0].value
        raise ValueError(f"{what} {key!r} is not a column of sources.{role}: declare it in sources.{role}.columns "
                         "with its type (int, bigint or string); the key type of Feast's entities and of the "
                         "online store follows that declaration")
    bad = {r: t for r, t in types.items() if t not in KEY_TYPES}
    if bad:
        r, t = next(iter(bad.items()))
        raise ValueError(f"{config_key(r, key)}: the {what} must be int, bigint or string, not {t.value}")
    kinds = {KeyType.string if t == ColumnType.string else KeyType.int64 for t in types.values()}
    if len(kinds) > 1:
        raise ValueError(f"key {key!r} is declared with different types ("
                         + ", ".join(f"{config_key(r, key)}: {t.value}" for r, t in types.items())
                         + "): declare the same type everywhere")
    return kinds.pop()


def mapping_problems(schema: DataSchema, sources: Sources) -> list[str]:
    """Every way the declaration fails the schema (role missing, wrong type, ambiguous), each naming its key."""
    problems: list[str] = []
    by_role = dict(sources.declared())

    def where(name: str, roles: tuple[SourceRole, ...]) -> list[SourceRole]:
        return [r for r in roles if r in by_role and name in by_role[r].columns]

    def need(name: str, what: str, role: SourceRole, allowed: tuple[ColumnType, ...]) -> None:
        src = by_role.get(role)
        if src is None or name not in src.columns:
            problems.append(f"{what} {name!r} is not a column of sources.{role.value}: add it to "
                            f"sources.{role.value}.columns (with `raw:` if the source names it otherwise)")
        elif src.columns[name].type not in allowed:
            problems.append(f"{config_key(role, name)}: the {what} must be "
                            f"{' or '.join(t.value for t in allowed)}, not {src.columns[name].type.value}")

    s, ev = schema, SourceRole.events
    need(s.user_key, "schema.user_key", ev, KEY_TYPES)
    need(s.user_key, "schema.user_key", SourceRole.users, KEY_TYPES)
    need(s.item_key, "schema.item_key", ev, KEY_TYPES)
    need(s.item_key, "schema.item_key", SourceRole.items, KEY_TYPES)
    if sources.item_statistics is not None:
        need(s.item_key, "schema.item_key", SourceRole.item_statistics, KEY_TYPES)
    need(s.scenario, "schema.scenario", ev, KEY_TYPES)
    for task in s.tasks:
        need(task, "task (schema.tasks)", ev, TASK_TYPES)
    unit = sources.events.unit_of_time(s.timestamp)
    if unit is None and s.timestamp in sources.events.columns:
        problems.append(f"sources.events.time_unit is not set: the event time {s.timestamp!r} (schema.timestamp) "
                        f"is declared {sources.events.columns[s.timestamp].type.value}, so say its unit: s, ms or us "
                        "(epoch seconds, milliseconds, microseconds)")
    else:
        epoch = (ColumnType.timestamp,) if unit == TimeUnit.timestamp else NUMERIC
        need(s.timestamp, f"schema.timestamp (time_unit {unit.value if unit else '-'})", ev, epoch)
    if s.date is not None:
        need(s.date, "schema.date", ev, DATE_TYPES)
    for key, roles in ((s.user_key, (ev, SourceRole.users)),
                       (s.item_key, (ev, SourceRole.items, SourceRole.item_statistics))):
        types = {r: by_role[r].columns[key].type for r in where(key, roles)}
        if len(set(types.values())) > 1:
            problems.append(f"key {key!r} is declared with different types ("
                            + ", ".join(f"{config_key(r, key)}: {t.value}" for r, t in types.items())
                            + "): declare the same type everywhere")
    item_sides = (SourceRole.items, SourceRole.item_statistics)
    for fields, sides, key, label in ((s.user_fields, (SourceRole.users,), s.user_key, "schema.user_fields"),
                                      (s.item_fields, item_sides, s.item_key, "schema.item_fields")):
        for f in fields:
            if f.name == key:
                continue
            found = where(f.name, sides + (ev,))
            if not found:
                problems.append(f"{label} {f.name!r} is not a column of "
                                f"{' or '.join('sources.' + r.value for r in sides + (ev,) if r in by_role)}: "
                                f"add it to sources.{sides[0].value}.columns, or remove it from {label}")
            elif f.kind == FieldKind.numeric and by_role[found[0]].columns[f.name].type not in NUMERIC:
                problems.append(f"{config_key(found[0], f.name)}: {label} declares {f.name!r} numeric, so it must "
                                f"be int, bigint or double, not {by_role[found[0]].columns[f.name].type.value} "
                                f"(or make the field categorical)")
    stats = sources.item_statistics
    shared = sorted((set(sources.items.columns) & set(stats.columns)) - {s.item_key}) if stats else []
    if shared:
        problems.append(f"sources.items and sources.item_statistics both declare {shared}: keep each column in one")
    return problems


def column_roles(schema: DataSchema, sources: Sources) -> dict[tuple[SourceRole, str], str]:
    """What each declared column is for (dry-run report): key, scenario, task, time, date or feature field."""
    s, ev = schema, SourceRole.events
    out: dict[tuple[SourceRole, str], str] = {}
    for role, src in sources.declared():
        for name in src.columns:
            out[(role, name)] = ""
        if s.user_key in src.columns:
            out[(role, s.user_key)] = "user key"
        if s.item_key in src.columns:
            out[(role, s.item_key)] = "item key"
    kinds = {f.name: f"{side} field ({f.kind.value})" for side, fields in (("user", s.user_fields),
                                                                          ("item", s.item_fields)) for f in fields}
    for (role, name), what in list(out.items()):
        if not what and name in kinds:
            out[(role, name)] = kinds[name]
    unit = sources.events.unit_of_time(s.timestamp)
    fixed = {s.scenario: "scenario", s.timestamp: f"event time ({unit.value if unit else 'unit not set'})",
             **{t: "task (0/1)" for t in s.tasks}}
    if s.date is not None:
        fixed[s.date] = f"date ({sources.events.date_format})"
    for name, what in fixed.items():
        if (ev, name) in out:
            out[(ev, name)] = what
    return out

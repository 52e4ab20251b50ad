"""Expectation suites as code: two per table, built from config thresholds and the day being validated.

- `<table>_schema` runs on the table's Spark batch and reads only its schema (no Spark job): the column set,
  the key and scalar types (GE built-ins) and the vector's element type (custom: GE's Spark type check only sees
  ArrayType).
- `<table>` runs on the one-row frame of the table's statistics (`validation.checks`: one Spark aggregation for
  every row-level check) and, for an embedding table, its day-level metrics (`validation.metrics`: coverage,
  drift, collapse): each value bounded by a GE range check.
Values put into checks are validated first (dates, hex model versions, numbers). The day and the model version
live in the statistics (rows whose ds is not the day), not in the suites, so a suite changes with the config and
the export's widths only, and GE's stores are not rewritten every day.
"""
from __future__ import annotations

import datetime as dt

import great_expectations as gx
import great_expectations.expectations as gxe

from lfm.contract import day_end
from lfm.config import LfmConfig
from lfm.names import check_model_version, parse_ds
from validation import expectations as ve
from validation.batch import DIM, FINITE, NORM, STAT_COLUMNS, ZERO, q, sql_double
from validation.checks import Check, broken, share_at_least, share_at_most, unique
from validation.tables import KEY_TYPES, TableSpec

SPARK_TYPES = {"string": "StringType", "date": "DateType", "timestamp": "TimestampType"}  # contract -> pyspark
ROW_COUNT = "row_count"


def day_bounds(ds: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """D 00:00 and D+1 00:00 local, as UTC datetimes, by the refresh's own `day_end` (an embedding row's
    event_timestamp is the second one)."""
    day = parse_ds(ds)
    return (day_end(day - dt.timedelta(days=1), timezone).astimezone(dt.timezone.utc),
            day_end(day, timezone).astimezone(dt.timezone.utc))


def schema_suite(spec: TableSpec, columns: list[str], exact: bool) -> gx.ExpectationSuite:
    """The expected columns (exactly, or at least) and the contract types, from the batch's schema alone."""
    exps: list[gxe.Expectation] = [gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=exact)]
    if spec.types:
        exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=spec.key, type_list=list(KEY_TYPES)))
    for column, type_ in spec.types.items():
        if column == spec.vector:
            exps.append(ve.ExpectVectorsToBeFloatArrays(column=column, description=f"{column} is array<float>"))
        else:
            exps.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_=SPARK_TYPES[type_]))
    return gx.ExpectationSuite(name=f"{spec.name}_schema", expectations=exps)


def schema_columns(cfg: LfmConfig, spec: TableSpec) -> tuple[list[str], bool]:
    """The columns a table must have, and whether exactly those (embedding tables) or at least those (inputs)."""
    if spec.is_embedding:
        return spec.columns, True
    s = cfg.schema
    if spec.name == "events":
        return [s.user_key, s.item_key, s.scenario, *s.tasks, "ds", "event_timestamp"], False
    fields = [f.name for f in (s.user_fields if spec.entity == "user" else s.item_fields)]
    return [spec.key] + [f for f in fields if f != spec.key], False


def _in_set(has: set[str], column: str, literal: str, description: str) -> Check:
    """Every non-null value of `column` equals the SQL `literal`."""
    return broken(f"in_set({column})", f"{q(column)} <> {literal}", description).unless(column in has)


def _common(has: set[str], required: list[str]) -> list[Check]:
    """Not empty; the required columns never null."""
    return [Check(ROW_COUNT, "count(1)", 1, None, "not empty"),
            *[broken(f"not_null({c})", f"{q(c)} IS NULL", f"{c} is never null").unless(c in has) for c in required]]


def _date(day: dt.date) -> str:
    return f"DATE '{parse_ds(day).isoformat()}'"


def _instant(moment: dt.datetime) -> str:
    """An exact instant as a Spark timestamp (seconds since the epoch: no time zone parsing involved)."""
    return f"timestamp_seconds({int(moment.timestamp())})"


def embedding_checks(cfg: LfmConfig, spec: TableSpec, columns: list[str], ds: dt.date, model_version: str,
                     dim: int) -> list[Check]:
    """Keys, version, freshness and vector checks of one embedding table's `ds` partition (batch `columns`,
    with the `_vec_*` statistics when its vector is a numeric array)."""
    ds, version = parse_ds(ds), check_model_version(model_version)
    t = cfg.quality.thresholds(spec.name)
    _, end = day_bounds(ds, cfg.schema.timezone)
    has, vec = set(columns), spec.vector
    stats = set(STAT_COLUMNS) <= has
    checks = _common(has, [spec.key, *spec.types]) + [
        unique([spec.key, "model_version"], f"one row per {spec.key} and model_version")
        .unless({spec.key, "model_version"} <= has),
        _in_set(has, "ds", _date(ds), "ds is the validated day"),
        _in_set(has, "event_timestamp", _instant(end),
                f"event_timestamp is the end of the validated day (next midnight in {cfg.schema.timezone})"),
        broken(f"vector_width({vec})", f"{q(DIM)} <> {int(dim)}", f"every {vec} vector has {int(dim)} values")
        .unless(stats),
        broken(f"vector_finite({vec})", f"NOT {q(FINITE)}", "no NaN, infinite or null value in any vector")
        .unless(stats),
        broken(f"vector_norm({vec})", f"{q(NORM)} NOT BETWEEN {sql_double(t.min_norm)} AND {sql_double(t.max_norm)}",
               f"L2 norm of every finite non-zero vector in [{t.min_norm:g}, {t.max_norm:g}]").unless(stats),
        share_at_most(f"zero_share({vec})", q(ZERO), q(ZERO), t.max_zero_share,
                      f"share of all-zero vectors at most {t.max_zero_share:g}").unless(stats),
    ]
    if not cfg.quality.allow_side_by_side_versions:
        checks.append(_in_set(has, "model_version", f"'{version}'",
                              "the partition holds only the validated model_version"))
    return checks


def events_checks(cfg: LfmConfig, columns: list[str], ds: dt.date) -> list[Check]:
    """The ingested log of one day: keys set, labels binary, ds and (mostly) times on the day."""
    s, ds, has = cfg.schema, parse_ds(ds), set(columns)
    start, end = day_bounds(ds, s.timezone)
    share, ts = float(cfg.quality.events_min_in_day_share), q("event_timestamp")
    checks = _common(has, [s.user_key, s.item_key, s.scenario, "event_timestamp"]) + [
        _in_set(has, "ds", _date(ds), "ds is the validated day"),
        share_at_least("on_day(event_timestamp)", f"{ts} >= {_instant(start)} AND {ts} < {_instant(end)}", ts,
                       share, f"at least {share:g} of events happen on the validated day in {s.timezone}")
        .unless("event_timestamp" in has),
    ]
    checks += [broken(f"in_set({task})", f"{q(task)} NOT IN (0, 1)", f"{task} is 0 or 1").unless(task in has)
               for task in s.tasks]
    return checks


def entity_checks(spec: TableSpec, columns: list[str]) -> list[Check]:
    """The users or items snapshot: keys set, one row per key."""
    has = set(columns)
    return _common(has, [spec.key]) + [unique([spec.key], f"one row per {spec.key}").unless(spec.key in has)]


def table_checks(cfg: LfmConfig, spec: TableSpec, columns: list[str], ds: dt.date, model_version: str | None,
                 dim: int | None) -> list[Check]:
    """The row-level checks of any validated table, given the columns of its batch."""
    if spec.is_embedding:
        return embedding_checks(cfg, spec, columns, ds, model_version, dim)
    if spec.name == "events":
        return events_checks(cfg, columns, ds)
    return entity_checks(spec, columns)


def day_suite(cfg: LfmConfig, spec: TableSpec, checks: list[Check]) -> gx.ExpectationSuite:
    """The `<table>` suite over the one-row frame: each check's bound, and an embedding table's metric bounds."""
    exps = [c.expectation() for c in checks]
    if spec.is_embedding:
        exps += _metric_expectations(cfg, spec)
    return gx.ExpectationSuite(name=spec.name, expectations=exps)


def _metric_expectations(cfg: LfmConfig, spec: TableSpec) -> list[gxe.Expectation]:
    """Coverage, drift, collapse and version-drift bounds (a null metric is not applicable)."""
    t = cfg.quality.thresholds(spec.name)
    return [
        ve.ExpectCoverageToBeAbove(min_value=t.min_coverage,
                                   description=f"at least {t.min_coverage:g} of the {spec.entity}s active in the "
                                               "day's events have a vector"),
        ve.ExpectDriftMeanCosineToBeBetween(min_value=t.min_mean_cosine, max_value=t.max_mean_cosine,
                                            description="mean cosine to D-1 over shared entities in "
                                                        f"[{t.min_mean_cosine:g}, {t.max_mean_cosine:g}]"),
        ve.ExpectDriftMovedShareToBeBelow(min_value=0.0, max_value=t.max_moved_share,
                                          description=f"at most {t.max_moved_share:g} of shared entities have "
                                                      f"cosine to D-1 below {t.moved_cosine:g}"),
        ve.ExpectEffectiveRankToBeAbove(min_value=t.min_effective_rank,
                                        description=f"effective rank of a sample at least {t.min_effective_rank:g}"),
        ve.ExpectInformationAbundanceToBeAbove(min_value=t.min_information_abundance,
                                               description="information abundance of a sample at least "
                                                           f"{t.min_information_abundance:g}"),
        ve.ExpectVersionMeanCosineToBeAbove(min_value=t.min_version_cosine, max_value=1.0,
                                            description="mean cosine between this version's vectors and the "
                                                        f"previous version's at least {t.min_version_cosine:g}"),
    ]

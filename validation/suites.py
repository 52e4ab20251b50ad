"""Expectation suites as code: one per table, built from config thresholds and the day being validated.

The partition suite of a table runs on its Spark batch with GE built-ins wherever one exists (row count,
columns, types, non-null, (compound) key uniqueness, value sets, ranges on the derived `_vec_*` columns of
`validation.batch`); GE's Spark engine evaluates the column checks of a suite as one bundled aggregation.
Custom expectations are left for what GE lacks: the vector's element type here, and the day-level metrics of
the `_metrics` twin (coverage, drift, collapse), which runs on the one-row frame of `validation.metrics`.
Values put into expectations are validated first (dates, hex model versions, numbers).
"""
from __future__ import annotations

import datetime as dt

import great_expectations as gx
import great_expectations.expectations as gxe

from lfm.contract import day_end
from lfm.config import LfmConfig
from lfm.names import check_model_version, parse_ds
from validation import expectations as ve
from validation.batch import DIM, FINITE, NORM, STAT_COLUMNS, ZERO
from validation.tables import KEY_TYPES, TableSpec

SPARK_TYPES = {"string": "StringType", "date": "DateType", "timestamp": "TimestampType"}  # contract -> pyspark


def day_bounds(ds: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """D 00:00 and D+1 00:00 local, as UTC datetimes, by the refresh's own `day_end` (an embedding row's
    event_timestamp is the second one)."""
    day = parse_ds(ds)
    return (day_end(day - dt.timedelta(days=1), timezone).astimezone(dt.timezone.utc),
            day_end(day, timezone).astimezone(dt.timezone.utc))


def _types(spec: TableSpec) -> list[gxe.Expectation]:
    """The contract types: GE's type built-ins for the key and scalar columns; the vector's element type (which
    GE's Spark type check cannot see: it only tests for ArrayType) by the custom expectation."""
    out: list[gxe.Expectation] = [gxe.ExpectColumnValuesToBeInTypeList(column=spec.key, type_list=list(KEY_TYPES))]
    for column, type_ in spec.types.items():
        if column == spec.vector:
            out.append(ve.ExpectVectorsToBeFloatArrays(column=column, description=f"{column} is array<float>"))
        else:
            out.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_=SPARK_TYPES[type_]))
    return out


def _common(spec: TableSpec, required: list[str], column_set: list[str], exact: bool) -> list[gxe.Expectation]:
    """Non-empty, the expected columns (exactly, or at least), their types, non-null required columns."""
    return [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="not empty"),
        gxe.ExpectTableColumnsToMatchSet(column_set=column_set, exact_match=exact),
        *(_types(spec) if spec.types else []),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in required],
    ]


def embedding_suite(cfg: LfmConfig, spec: TableSpec, ds: dt.date, model_version: str, dim: int) -> gx.ExpectationSuite:
    """Schema, keys, version, freshness and vector checks of one embedding table's `ds` partition."""
    ds, version = parse_ds(ds), check_model_version(model_version)
    t = cfg.quality.thresholds(spec.name)
    _, end = day_bounds(ds, cfg.schema.timezone)
    exps = _common(spec, [spec.key, *spec.types], [*spec.columns, *STAT_COLUMNS], exact=True)
    exps += [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[spec.key, "model_version"],
                                            description=f"one row per {spec.key} and model_version"),
        gxe.ExpectColumnValuesToBeInSet(column="ds", value_set=[ds], description=f"ds = {ds}"),
        gxe.ExpectColumnValuesToBeInSet(
            column="event_timestamp", value_set=[end],
            description=f"event_timestamp = end of {ds} in {cfg.schema.timezone} ({end:%Y-%m-%d %H:%M} UTC)"),
        gxe.ExpectColumnValuesToBeBetween(column=DIM, min_value=int(dim), max_value=int(dim),
                                          description=f"every {spec.vector} vector has {int(dim)} values"),
        gxe.ExpectColumnValuesToBeInSet(column=FINITE, value_set=[True],
                                        description="no NaN, infinite or null value in any vector"),
        gxe.ExpectColumnValuesToBeBetween(
            column=NORM, min_value=t.min_norm, max_value=t.max_norm,
            description=f"L2 norm of every finite non-zero vector in [{t.min_norm:g}, {t.max_norm:g}]"),
        gxe.ExpectColumnValuesToBeInSet(column=ZERO, value_set=[False], mostly=1.0 - t.max_zero_share,
                                        description=f"share of all-zero vectors at most {t.max_zero_share:g}"),
    ]
    if not cfg.quality.allow_side_by_side_versions:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="model_version", value_set=[version],
                                                    description=f"the partition holds only model_version {version}"))
    return _suite(spec.name, exps)


def metrics_suite(cfg: LfmConfig, spec: TableSpec) -> gx.ExpectationSuite:
    """Coverage, drift and collapse bounds over the one-row metrics frame (a null metric is not applicable)."""
    t = cfg.quality.thresholds(spec.name)
    exps: list[gxe.Expectation] = [
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
    ]
    return _suite(f"{spec.name}_metrics", exps)


def events_suite(cfg: LfmConfig, spec: TableSpec, ds: dt.date) -> gx.ExpectationSuite:
    """The ingested log of one day: roles of the data schema present, keys set, labels binary, times on the day."""
    s, ds = cfg.schema, parse_ds(ds)
    start, end = day_bounds(ds, s.timezone)
    share = cfg.quality.events_min_in_day_share
    roles = [s.user_key, s.item_key, s.scenario, *s.tasks, "ds", "event_timestamp"]
    exps = _common(spec, [s.user_key, s.item_key, s.scenario, "event_timestamp"], roles, exact=False)
    exps += [
        gxe.ExpectColumnValuesToBeInSet(column="ds", value_set=[ds], description=f"ds = {ds}"),
        gxe.ExpectColumnValuesToBeBetween(column="event_timestamp", min_value=start, max_value=end, strict_max=True,
                                          mostly=share,
                                          description=f"at least {share:g} of events happen on {ds} in {s.timezone}"),
    ]
    exps += [gxe.ExpectColumnValuesToBeInSet(column=task, value_set=[0, 1]) for task in s.tasks]
    return _suite(spec.name, exps)


def entity_suite(cfg: LfmConfig, spec: TableSpec) -> gx.ExpectationSuite:
    """The users or items snapshot: the model's feature fields present, one row per key."""
    fields = [f.name for f in (cfg.schema.user_fields if spec.entity == "user" else cfg.schema.item_fields)]
    columns = [spec.key] + [f for f in fields if f != spec.key]
    exps = _common(spec, [spec.key], columns, exact=False)
    exps.append(gxe.ExpectColumnValuesToBeUnique(column=spec.key))
    return _suite(spec.name, exps)


def _suite(name: str, expectations: list[gxe.Expectation]) -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=name, expectations=expectations)

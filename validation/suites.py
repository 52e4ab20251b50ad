"""Expectation suites as code: one per table, built from config thresholds and the day being validated.

The partition suite of an embedding table runs on the `ds` partition as a Spark DataFrame; its `_metrics` twin
runs on the one-row frame of day-level metrics from `validation.metrics`. Queries only ever interpolate values
that were validated first (dates, hex model versions, numbers) and backtick-quoted column names.
"""
from __future__ import annotations

import datetime as dt

import great_expectations as gx
import great_expectations.expectations as gxe

from lfm.contract import day_end
from lfm.config import LfmConfig
from lfm.names import check_model_version, parse_ds
from validation import expectations as ve
from validation.batch import DIM, FINITE, NORM, STAT_COLUMNS, ZERO, q
from validation.tables import KEY_TYPES, TableSpec


def num(value: float) -> str:
    """A double literal that Spark parses the same way whatever the float's repr."""
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def day_bounds(ds: dt.date, timezone: str) -> tuple[int, int]:
    """Epoch seconds of D 00:00 and D+1 00:00 local, by the refresh's own `day_end` (an embedding row's
    event_timestamp is the second one)."""
    day = parse_ds(ds)
    return (int(day_end(day - dt.timedelta(days=1), timezone).timestamp()), int(day_end(day, timezone).timestamp()))


def _types_expectation(spec: TableSpec) -> ve.ExpectColumnTypesToMatch:
    checks = [f"typeof({q(spec.key)}) IN ({', '.join(repr(t) for t in KEY_TYPES)})"]
    checks += [f"typeof({q(c)}) = '{t}'" for c, t in spec.types.items()]
    observed = ", ".join(f"typeof({q(c)}) AS {q(c)}" for c in spec.columns)
    wanted = ", ".join(f"{c} {t}" for c, t in spec.types.items())
    return ve.ExpectColumnTypesToMatch(
        unexpected_rows_query=f"SELECT {observed} FROM {{batch}} WHERE NOT ({' AND '.join(checks)}) LIMIT 1",
        description=f"columns have their contract types: {spec.key} int/bigint/string"
                    + (f", {wanted}" if wanted else ""))


def _common(spec: TableSpec, required: list[str], column_set: list[str], exact: bool) -> list[gxe.Expectation]:
    """Non-empty, the expected columns (exactly, or at least), their types, non-null required columns."""
    out: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="not empty"),
        gxe.ExpectTableColumnsToMatchSet(column_set=column_set, exact_match=exact),
    ]
    if spec.types:
        out.append(_types_expectation(spec))
    out += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in required]
    return out


def embedding_suite(cfg: LfmConfig, spec: TableSpec, ds: dt.date, model_version: str, dim: int) -> gx.ExpectationSuite:
    """Schema, keys, version, freshness and vector checks of one embedding table's `ds` partition.

    Vector checks read the per-row statistics of `validation.batch` (`_vec_dim`, `_vec_finite`, `_vec_norm`,
    `_vec_zero`), computed once per batch.
    """
    ds, version = parse_ds(ds), check_model_version(model_version)
    t = cfg.quality.thresholds(spec.name)
    k, v = q(spec.key), q(spec.vector or "")
    _, end = day_bounds(ds, cfg.schema.timezone)
    exps = _common(spec, [spec.key, *spec.types], [*spec.columns, *STAT_COLUMNS], exact=True)
    exps += [
        ve.ExpectKeysToBeUniquePerVersion(
            unexpected_rows_query=f"SELECT {k}, model_version, count(*) AS n FROM {{batch}} "
                                  f"GROUP BY {k}, model_version HAVING count(*) > 1",
            description=f"one row per {spec.key} and model_version"),
        ve.ExpectPartitionDayToMatch(
            unexpected_rows_query=f"SELECT ds, event_timestamp, count(*) AS n FROM {{batch}} "
                                  f"WHERE ds IS DISTINCT FROM DATE'{ds.isoformat()}' "
                                  f"OR event_timestamp IS DISTINCT FROM timestamp_seconds({end}) "
                                  "GROUP BY ds, event_timestamp",
            description=f"ds = {ds} and event_timestamp = end of that day in {cfg.schema.timezone} "
                        f"({dt.datetime.fromtimestamp(end, dt.timezone.utc):%Y-%m-%d %H:%M} UTC)"),
        ve.ExpectVectorDimensionToEqual(
            unexpected_rows_query=f"SELECT {k}, {DIM} FROM {{batch}} WHERE {v} IS NOT NULL AND {DIM} <> {int(dim)}",
            description=f"every {spec.vector} vector has {int(dim)} values"),
        ve.ExpectVectorValuesToBeFinite(
            unexpected_rows_query=f"SELECT {k} FROM {{batch}} WHERE {v} IS NOT NULL AND NOT {FINITE}",
            description="no NaN, infinite or null value in any vector"),
        ve.ExpectVectorNormToBeBetween(
            unexpected_rows_query=f"SELECT {k}, {NORM} FROM {{batch}} WHERE {FINITE} AND {NORM} > 0 "
                                  f"AND ({NORM} < {num(t.min_norm)} OR {NORM} > {num(t.max_norm)})",
            description=f"L2 norm of every finite non-zero vector in [{t.min_norm:g}, {t.max_norm:g}]"),
        ve.ExpectZeroVectorShareToBeBelow(
            unexpected_rows_query=f"SELECT zero_share FROM (SELECT avg(CASE WHEN {ZERO} THEN 1.0 ELSE 0.0 END) "
                                  f"AS zero_share FROM {{batch}}) WHERE zero_share > {num(t.max_zero_share)}",
            description=f"share of all-zero vectors at most {t.max_zero_share:g}"),
    ]
    if not cfg.quality.allow_side_by_side_versions:
        exps.append(ve.ExpectSingleModelVersion(
            unexpected_rows_query=f"SELECT model_version, count(*) AS n FROM {{batch}} "
                                  f"WHERE model_version IS DISTINCT FROM '{version}' GROUP BY model_version",
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
        ve.ExpectPartitionDayToMatch(
            unexpected_rows_query=f"SELECT ds, count(*) AS n FROM {{batch}} "
                                  f"WHERE ds IS DISTINCT FROM DATE'{ds.isoformat()}' GROUP BY ds",
            description=f"ds = {ds}"),
        ve.ExpectEventTimesToFallInDay(
            unexpected_rows_query=f"SELECT in_day FROM (SELECT avg(CASE WHEN unix_seconds(event_timestamp) "
                                  f"BETWEEN {start} AND {end - 1} THEN 1.0 ELSE 0.0 END) AS in_day FROM {{batch}}) "
                                  f"WHERE in_day < {num(share)}",
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

"""Quality thresholds in config, and the gate's pure helpers (no Spark session needed)."""
from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from lfm.contract import ExportSpec

SPEC = ExportSpec("a1b2c3d4e5f6", cr_layer="dnn1", ur_dim=64, ir_dim=64, cr_dim=32, tau_hours=72.0,
                  normalisation="layernorm", state_ttl_days=None, schema_hash="0" * 16)

from lfm.config import ConfigError, config_from_dict
from lfm.names import BadInput


def test_defaults_and_per_table_overrides():
    cfg = config_from_dict({"quality": {"vectors": {"max_norm": 50.0},
                                        "tables": {"cr_user": {"min_mean_cosine": 0.8, "max_moved_share": 0.05}}}})
    assert cfg.quality.thresholds("ur").max_norm == 50.0 and cfg.quality.thresholds("ur").min_mean_cosine == 0.5
    cr = cfg.quality.thresholds("cr_user")
    assert (cr.max_norm, cr.min_mean_cosine, cr.max_moved_share) == (50.0, 0.8, 0.05)


@pytest.mark.parametrize("quality,needle", [
    ({"tables": {"urr": {"min_norm": 1.0}}}, "unknown tables ['urr']"),
    ({"dims": {"ur": 64}}, "quality.dims: unknown key"),  # widths come from the export spec, never config
    ({"vectors": {"min_norm": 5.0, "max_norm": 1.0}}, "min_norm 5.0 must be below max_norm"),
    ({"tables": {"ir": {"min_mean_cosine": 0.9, "max_mean_cosine": 0.8}}}, "must not exceed max_mean_cosine"),
    ({"vectors": {"max_zero_share": 1.5}}, "quality.vectors.max_zero_share"),
    ({"vectors": {"min_coverag": 0.5}}, "unknown key"),
])
def test_bad_thresholds_stop_at_load(quality, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"quality": quality})
    assert needle in str(err.value)


def test_end_of_day_is_next_local_midnight():
    from validation.suites import day_bounds

    start, end = day_bounds(dt.date(2022, 4, 25), "Asia/Shanghai")
    assert end == dt.datetime(2022, 4, 25, 16, tzinfo=dt.timezone.utc)
    assert end - start == dt.timedelta(days=1)
    start, end = day_bounds(dt.date(2022, 3, 13), "America/New_York")  # a 23-hour day (DST starts)
    assert end - start == dt.timedelta(hours=23)


def test_checks_are_ge_built_ins_over_one_aggregation_and_refuse_unvalidated_values():
    from validation.checks import CHECK
    from validation.expectations import CUSTOM_TYPES, failure_name
    from validation.suites import day_suite, embedding_checks, schema_columns, schema_suite
    from validation.tables import table_spec

    cfg = config_from_dict({})
    spec = table_spec(cfg, "ur")
    columns = [*spec.columns, "_vec_dim", "_vec_finite", "_vec_norm", "_vec_zero"]
    with pytest.raises(BadInput):
        embedding_checks(cfg, spec, columns, "2022-04-25' OR '1'='1", "a1b2c3d4e5f6", 64)
    with pytest.raises(BadInput):
        embedding_checks(cfg, spec, columns, "2022-04-25", "v1'; DROP TABLE ur; --", 64)
    checks = embedding_checks(cfg, spec, columns, "2022-04-25", "a1b2c3d4e5f6", 64)
    suite = day_suite(cfg, spec, checks)
    names = Counter(failure_name(e.expectation_type, e.configuration.kwargs, e.configuration.meta)
                    for e in suite.expectations)
    assert all(n == 1 for n in names.values()), names
    assert {"row_count", "not_null(ur)", "unique(user_id,model_version)", "in_set(ds)", "in_set(event_timestamp)",
            "in_set(model_version)", "vector_width(ur)", "vector_finite(ur)", "vector_norm(ur)", "zero_share(ur)",
            "expect_coverage_to_be_above", "expect_effective_rank_to_be_above"} <= set(names)
    row_level = [e for e in suite.expectations if e.configuration.meta.get(CHECK)]
    assert {e.expectation_type for e in row_level} == {"expect_column_values_to_be_between"}  # GE's own range check
    kwargs = [e.configuration.kwargs for e in row_level]
    bounds = {k["column"]: (k.get("min_value"), k.get("max_value")) for k in kwargs}
    assert bounds["zero_share(ur)"] == (0, pytest.approx(0.01)) and bounds["vector_width(ur)"] == (0, 0)
    assert "_vec_dim` <> 64" in next(c.statistic for c in checks if c.name == "vector_width(ur)")
    # the day and the version live in the statistics, so the stored suite does not change from day to day
    later = day_suite(cfg, spec, embedding_checks(cfg, spec, columns, "2022-04-26", "a1b2c3d4e5f6", 64))
    assert [e.description for e in later.expectations] == [e.description for e in suite.expectations]
    schema = schema_suite(spec, *schema_columns(cfg, spec))
    assert {failure_name(e.expectation_type, e.configuration.kwargs) for e in schema.expectations} >= {
        "expect_table_columns_to_match_set", "expect_column_values_to_be_in_type_list(user_id)",
        "expect_column_values_to_be_of_type(ds)", "expect_column_values_to_be_of_type(export_id)",
        "expect_vectors_to_be_float_arrays"}
    custom = {e.expectation_type for e in [*schema.expectations, *suite.expectations]} & CUSTOM_TYPES
    assert "expect_vectors_to_be_float_arrays" in custom  # the one type GE's own type check cannot see
    assert failure_name("expect_effective_rank_to_be_above", {"column": "effective_rank"}) == \
        "expect_effective_rank_to_be_above"
    assert failure_name("expect_column_values_to_be_of_type", {"column": "ds"}) == \
        "expect_column_values_to_be_of_type(ds)"


def test_a_check_whose_column_is_missing_does_not_apply():
    """The schema suite fails the table; the statistic is null (GE skips it) rather than a query error."""
    from validation.checks import NOT_APPLICABLE
    from validation.suites import embedding_checks
    from validation.tables import table_spec

    cfg = config_from_dict({})
    spec = table_spec(cfg, "ur")
    checks = {c.name: c for c in embedding_checks(cfg, spec, ["user_id", "ur"], "2022-04-25", "a1b2c3d4e5f6", 64)}
    assert checks["not_null(ds)"].statistic == checks["vector_width(ur)"].statistic == NOT_APPLICABLE
    assert checks["not_null(user_id)"].statistic != NOT_APPLICABLE


def test_side_by_side_versions_drop_the_single_version_check():
    from validation.suites import embedding_checks
    from validation.tables import table_spec

    cfg = config_from_dict({"quality": {"allow_side_by_side_versions": True}})
    spec = table_spec(cfg, "ir")
    names = {c.name for c in embedding_checks(cfg, spec, spec.columns, "2022-04-25", "a1b2c3d4e5f6", 64)}
    assert "in_set(model_version)" not in names and {"in_set(ds)", "in_set(event_timestamp)"} <= names


def test_expected_width_comes_from_outside_the_data():
    """The gate checks embedding tables against an export spec's widths: without one it refuses to run."""
    from validation.errors import QualityError
    from validation.gate import run_gate

    cfg = config_from_dict({})
    with pytest.raises(QualityError, match="pass the export spec and the versions"):
        run_gate(None, cfg, "2022-04-25", tables=["ur"])
    with pytest.raises(QualityError, match="versions of \\['ur'\\]"):
        run_gate(None, cfg, "2022-04-25", SPEC, {"ir": 3}, tables=["ur"])

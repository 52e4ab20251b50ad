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


def test_suites_use_ge_built_ins_and_refuse_unvalidated_values():
    from validation.expectations import CUSTOM_TYPES, failure_name
    from validation.suites import embedding_suite
    from validation.tables import table_spec

    cfg = config_from_dict({})
    spec = table_spec(cfg, "ur")
    with pytest.raises(BadInput):
        embedding_suite(cfg, spec, "2022-04-25' OR '1'='1", "a1b2c3d4e5f6", 64)
    with pytest.raises(BadInput):
        embedding_suite(cfg, spec, "2022-04-25", "v1'; DROP TABLE ur; --", 64)
    suite = embedding_suite(cfg, spec, "2022-04-25", "a1b2c3d4e5f6", 64)
    names = Counter(failure_name(e.expectation_type, e.configuration.kwargs) for e in suite.expectations)
    assert all(n == 1 for n in names.values()), names
    assert {"expect_table_row_count_to_be_between", "expect_compound_columns_to_be_unique(user_id,model_version)",
            "expect_column_values_to_be_in_set(ds)", "expect_column_values_to_be_in_set(event_timestamp)",
            "expect_column_values_to_be_in_set(model_version)", "expect_column_values_to_be_between(_vec_dim)",
            "expect_column_values_to_be_in_set(_vec_finite)", "expect_column_values_to_be_between(_vec_norm)",
            "expect_column_values_to_be_in_set(_vec_zero)", "expect_column_values_to_be_in_type_list(user_id)",
            "expect_column_values_to_be_of_type(ds)", "expect_column_values_to_be_of_type(export_id)",
            "expect_vectors_to_be_float_arrays"} <= set(names)
    custom = {e.expectation_type for e in suite.expectations} & CUSTOM_TYPES
    assert custom == {"expect_vectors_to_be_float_arrays"}  # the one thing GE's own type check cannot see
    zero = next(e for e in suite.expectations if e.configuration.kwargs.get("column") == "_vec_zero")
    assert zero.configuration.kwargs["mostly"] == pytest.approx(0.99)  # at most 1% all-zero vectors
    width = next(e for e in suite.expectations if e.configuration.kwargs.get("column") == "_vec_dim")
    assert (width.configuration.kwargs["min_value"], width.configuration.kwargs["max_value"]) == (64, 64)
    assert failure_name("expect_effective_rank_to_be_above", {"column": "effective_rank"}) == \
        "expect_effective_rank_to_be_above"
    assert failure_name("expect_column_values_to_not_be_null", {"column": "ur"}) == \
        "expect_column_values_to_not_be_null(ur)"


def test_side_by_side_versions_drop_the_single_version_check():
    from validation.suites import embedding_suite
    from validation.tables import table_spec

    cfg = config_from_dict({"quality": {"allow_side_by_side_versions": True}})
    suite = embedding_suite(cfg, table_spec(cfg, "ir"), "2022-04-25", "a1b2c3d4e5f6", 64)
    columns = {e.configuration.kwargs.get("column") for e in suite.expectations
               if e.expectation_type == "expect_column_values_to_be_in_set"}
    assert "model_version" not in columns and {"ds", "event_timestamp"} <= columns


def test_expected_width_comes_from_outside_the_data():
    """The gate checks embedding tables against an export spec's widths: without one it refuses to run."""
    from validation.errors import QualityError
    from validation.gate import run_gate

    cfg = config_from_dict({})
    with pytest.raises(QualityError, match="pass the export spec and the versions"):
        run_gate(None, cfg, "2022-04-25", tables=["ur"])
    with pytest.raises(QualityError, match="versions of \\['ur'\\]"):
        run_gate(None, cfg, "2022-04-25", SPEC, {"ir": 3}, tables=["ur"])


def test_context_must_be_local(tmp_path):
    from validation.context import quality_root
    from validation.errors import QualityError

    with pytest.raises(QualityError, match="quality.context_dir"):
        quality_root(config_from_dict({"lakehouse": "s3a://bucket/lake"}))
    cfg = config_from_dict({"lakehouse": "s3a://bucket/lake", "quality": {"context_dir": str(tmp_path / "q")}})
    assert quality_root(cfg) == tmp_path / "q"
    assert quality_root(config_from_dict({"lakehouse": str(tmp_path / "lake")})) == tmp_path / "lake" / "_quality"

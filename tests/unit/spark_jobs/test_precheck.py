"""`lfm ingest`'s checks before Spark starts: the columns of every local source (CSV header, Parquet schema, JSON
field names) and the raw columns each derived column's expression reads; a misspelling is named in milliseconds,
without a Spark session (tests/support/shop.py's files, no Spark)."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml

from lfm.config import config_from_dict
from lfm.config.sources import SourceRole
from spark_jobs.precheck import precheck
from spark_jobs.raw_input import IngestError
from tests.support.cli import cli
from tests.support.shop import ShopSpec, shop_config, write_shop


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shop")
    write_shop(root, ShopSpec(users=20, items=8, days=1, events_per_day=50, seed=2))
    return root


def _conf(root: Path, data: Path, **columns: dict) -> dict:
    """The shop's lfm.yaml with columns changed: `events={"click": {...}}` replaces or adds those columns."""
    conf = shop_config(root, data)
    conf["sources"] = copy.deepcopy(conf["sources"])
    for role, changed in columns.items():
        conf["sources"][role]["columns"].update(changed)
    return conf


def _precheck(tmp_path: Path, data: Path, **columns: dict):
    return precheck(config_from_dict(_conf(tmp_path, data, **columns), "<test>", str(tmp_path)))


def test_the_declared_shop_with_derived_columns_passes_and_says_what_it_read(tmp_path, data):
    checked = _precheck(tmp_path, data,
                        events={"click": {"expr": "try_cast(dwell_s AS DOUBLE) >= 30", "type": "boolean"},
                                "surface": {"expr": "'all'"}},
                        items={"price": {"expr": "try_cast(price AS DOUBLE) * 2", "type": "double"}})
    assert {r.value: how for r, how in checked.columns_read.items()} == {
        "events": "csv header", "users": "parquet schema", "items": "json fields", "item_statistics": "csv header"}
    assert checked.expressions == 3
    assert checked.summary().startswith("before Spark: the declaration; columns of events (csv header)")


@pytest.mark.parametrize("columns, expect", [
    ({"events": {"click": {"expr": "try_cast(dwel_s AS DOUBLE) >= 30", "type": "boolean"}}},
     "sources.events.columns.click.expr 'try_cast(dwel_s AS DOUBLE) >= 30' reads ['dwel_s'], which the source "
     "does not have; its raw columns are ['event_ts', 'member', 'product', 'page', 'clicked', 'purchased', "
     "'dwell_s', 'session']"),
    ({"events": {"surface": {"raw": "pgae", "type": "string"}}}, "ratings_20240308.csv: missing columns ['pgae']; "
                                                              "sources.events.columns declares"),
    ({"users": {"country": {"raw": "contry", "type": "string"}}}, "users.parquet): missing columns ['contry']"),
    ({"items": {"brand": {"raw": "brnd", "type": "string"}}},
     "items.jsonl): missing columns ['brnd'] (no record has them)"),
    ({"items": {"price": {"expr": "try_cast(prise AS DOUBLE)", "type": "double"}}},
     "sources.items.columns.price.expr 'try_cast(prise AS DOUBLE)' reads ['prise']"),
])
def test_a_misspelled_column_is_named_before_spark(tmp_path, data, columns, expect):
    with pytest.raises(IngestError) as err:
        _precheck(tmp_path, data, **columns)
    assert expect in str(err.value)


def test_a_delta_source_is_checked_against_its_schema(tmp_path, data):
    import pandas as pd
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "users_delta"), pd.read_parquet(data / "users.parquet"))
    conf = _conf(tmp_path, data)
    conf["sources"]["users"] = {**conf["sources"]["users"], "path": str(tmp_path / "users_delta"), "format": "delta"}
    assert precheck(config_from_dict(conf, "<test>", str(tmp_path))).columns_read[SourceRole.users] == "delta schema"
    conf["sources"]["users"]["columns"]["country"] = {"raw": "contry", "type": "string"}
    with pytest.raises(IngestError, match=r"missing columns \['contry'\] has \['uid', 'country'"):
        precheck(config_from_dict(conf, "<test>", str(tmp_path)))


def test_lfm_ingest_dry_run_refuses_a_misspelling_without_starting_spark(tmp_path, data):
    from pyspark import SparkContext

    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump(_conf(tmp_path, data, events={"click": {"expr": "ratng >= 4", "type": "boolean"}})))
    had_spark = SparkContext._active_spark_context is not None
    t0 = time.perf_counter()
    run = cli("--config", str(conf), "ingest", "--dry-run")
    assert run.code == 2 and "sources.events.columns.click.expr 'ratng >= 4' reads ['ratng']" in run.err
    assert time.perf_counter() - t0 < 10
    assert had_spark or SparkContext._active_spark_context is None  # no session was started for it

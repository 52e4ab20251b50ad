"""Ingest of declared sources in another shape (tests/support/shop.py) into real Delta tables: feature history as
of each day, time units and date formats, and bad input that names the source, the column, the config key to
change and a sample value, writing nothing."""
from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lakehouse.features import FeatureHistoryError, features_as_of
from lfm.config import LfmConfig, config_from_dict
from lfm.config.sources import SourceRole
from spark_jobs.ingest import IngestError, ingest, read_checked
from spark_jobs.precheck import precheck
from spark_jobs.samples import samples
from tests.support.shop import TZ, ShopSpec, days, shop_config, write_shop

SMALL = ShopSpec(users=30, items=12, days=3, events_per_day=120, seed=1)
D = days(SMALL.days)
SHOP_EVENTS = {"member_id": {"raw": "member", "type": "string"}, "item_id": {"raw": "product", "type": "string"},
               "surface": {"raw": "page", "type": "string"}, "click": {"raw": "clicked", "type": "boolean"},
               "purchase": {"raw": "purchased", "type": "boolean"}}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shop")
    write_shop(root / "v1", SMALL)
    write_shop(root / "v2", SMALL, users_version=2)  # members 0, 3, 6, ... moved to BR
    return root / "v1", root / "v2"


def config(root: Path, data: Path, sources: dict | None = None, **extra) -> LfmConfig:
    conf = shop_config(root, data, **extra)
    if sources:
        conf["sources"] = {**conf["sources"], **sources}
    return config_from_dict(conf, "<test>", str(root))


def test_feature_snapshots_are_read_as_of_each_day(spark, tmp_path, shop):
    from lakehouse.delta_io import overwrite_table, table_version

    v1, v2 = shop
    first = ingest(spark, config(tmp_path, v1), days=D[:2])
    assert first.snapshots == {"users": D[0], "items": D[0]}
    cfg = config(tmp_path, v2)  # the same lakehouse, a users file that changed
    assert ingest(spark, cfg, days=[D[2]]).snapshots == {"users": D[2], "items": None}
    version = table_version(spark, cfg.table_path("users"))
    assert ingest(spark, cfg, days=[D[2]]).snapshots == {"users": None, "items": None}  # rerun: the same bytes
    # Other bytes, the same rows (shuffled): read, checked, found equal by content, nothing written.
    shuffled = tmp_path / "v2_shuffled"
    shutil.copytree(v2, shuffled)
    users = pd.read_parquet(shuffled / "users.parquet")
    users.sample(frac=1.0, random_state=0).to_parquet(shuffled / "users.parquet", index=False)
    assert ingest(spark, config(tmp_path, shuffled), days=[D[2]]).snapshots == {"users": None, "items": None}
    assert table_version(spark, cfg.table_path("users")) == version
    # Re-ingesting an old day with its own files leaves the later snapshot in force from its day on.
    assert ingest(spark, config(tmp_path, v1), days=[D[1]]).snapshots == {"users": None, "items": None}
    assert spark.read.format("delta").load(cfg.table_path("users")).count() == 2 * SMALL.users

    rows = samples(spark, cfg, D).where("member_id = '10000'").select("ds", "country").distinct().collect()
    by_day = {r["ds"]: r["country"] for r in rows}
    assert by_day[D[2]] == "BR" and {by_day.get(D[0]), by_day.get(D[1])} - {None} and \
        "BR" not in (by_day.get(D[0]), by_day.get(D[1]))
    moved = features_as_of(spark, cfg, "users", D[2]).where("country = 'BR'").count()
    assert moved == 10 and features_as_of(spark, cfg, "users", D[1]).where("country = 'BR'").count() == 0
    with pytest.raises(FeatureHistoryError, match=f"no users snapshot is valid on {D[0] - dt.timedelta(days=1)}"):
        features_as_of(spark, cfg, "users", D[0] - dt.timedelta(days=1))

    # A users table written before feature history existed: a clear error, and the next ingest replaces it.
    overwrite_table(features_as_of(spark, cfg, "users", D[2]), cfg.table_path("users"), {"job": "test"})
    with pytest.raises(FeatureHistoryError, match="written before feature history existed"):
        features_as_of(spark, cfg, "users", D[2])
    assert ingest(spark, cfg, days=[D[2]]).snapshots["users"] == D[2]
    assert features_as_of(spark, cfg, "users", D[2]).count() == SMALL.users


def _local(epoch: pd.Series, fmt: str) -> pd.Series:
    return pd.to_datetime(epoch, unit="s", utc=True).dt.tz_convert(TZ).dt.strftime(fmt)


def test_time_as_text_or_timestamp_and_dates_in_a_format(spark, tmp_path, shop):
    """Wall-clock text in schema.timezone, text with an offset, a Delta table with a TIMESTAMP column, and a
    date column written as yyyy/MM/dd: the same instants and days as the epoch-second log."""
    v1, _ = shop
    data = tmp_path / "data"
    shutil.copytree(v1, data)
    log = pd.concat((pd.read_csv(f) for f in sorted((data / "events").glob("*.csv"))), ignore_index=True)
    expected = dict(zip(log["event_ts"], pd.to_datetime(_local(log["event_ts"], "%Y-%m-%d")).dt.date))
    text = log.assign(when=_local(log["event_ts"], "%Y-%m-%d %H:%M:%S"), day=_local(log["event_ts"], "%Y/%m/%d"))
    text.loc[text.index[:5], "when"] = pd.to_datetime(text["event_ts"][:5], unit="s", utc=True).dt.strftime(
        "%Y-%m-%dT%H:%M:%SZ")  # a few with an explicit offset
    shutil.rmtree(data / "events")
    (data / "events").mkdir()
    text.to_csv(data / "events" / "ratings_text.csv", index=False)
    columns = {**SHOP_EVENTS, "when": "timestamp", "day": "string", "event_ts": "bigint"}
    cfg = config(tmp_path, data, {"events": {"path": "events/*.csv", "time_unit": "timestamp",
                                             "date_format": "yyyy/MM/dd", "columns": columns}},
                 schema={**shop_config(tmp_path, data)["schema"], "timestamp": "when", "date": "day"})
    ingest(spark, cfg)
    got = spark.read.format("delta").load(cfg.table_path("events")).selectExpr(
        "event_ts", "unix_seconds(event_timestamp) AS t", "ds").collect()
    assert len(got) == len(log) and all(r["t"] == r["event_ts"] for r in got)
    assert all(r["ds"] == expected[r["event_ts"]] for r in got)

    # The same log as an existing Delta table with a TIMESTAMP column and no date column.
    table = str(tmp_path / "delta_events")
    frame = spark.createDataFrame(log.drop(columns=["session"])).selectExpr("*", "timestamp_seconds(event_ts) AS at")
    frame.write.format("delta").save(table)
    columns = {**SHOP_EVENTS, "at": "timestamp"}
    cfg = config(tmp_path / "second", data, {"events": {"path": table, "format": "delta", "time_unit": "timestamp",
                                                        "columns": columns}},
                 schema={**shop_config(tmp_path, data)["schema"], "timestamp": "at"})
    result = ingest(spark, cfg)
    assert result.days == D and result.events_rows == len(log)


def _events_as(data: Path, write) -> None:
    """Rewrite the copy's event files with `write(frame, path)`, every value kept as text, three dwell times
    blanked per file (missing values) and the undeclared session column dropped."""
    for path in sorted((data / "events").glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=["session"])
        frame.loc[frame.index[:3], "dwell_s"] = ""
        write(frame, path)


def test_a_tab_separated_log_with_a_null_marker_or_without_a_header_reads_as_its_comma_twin(spark, tmp_path, shop):
    """The same events as a comma-separated file, as a tab-separated one with `NA` for a missing value, and as a
    tab-separated one without a header row (`sources.events.csv`): the same rows in the lakehouse."""
    variants = {
        "comma": ({}, lambda frame, path: frame.to_csv(path, index=False)),
        "tab_na": ({"delimiter": "\t", "null_value": "NA"},
                   lambda frame, path: frame.replace("", "NA").to_csv(path, sep="\t", index=False)),
        "no_header": ({"delimiter": "\t", "header": False},
                      lambda frame, path: frame.to_csv(path, sep="\t", index=False, header=False)),
    }
    read = {}
    for name, (options, write) in variants.items():
        data = tmp_path / name
        shutil.copytree(shop[0], data)
        _events_as(data, write)
        events = {**shop_config(data, data)["sources"]["events"], **({"csv": options} if options else {})}
        cfg = config(data, data, {"events": events})
        ingest(spark, cfg)
        frame = spark.read.format("delta").load(cfg.table_path("events")).select(
            "member_id", "item_id", "surface", "click", "purchase", "dwell_s", "event_timestamp").toPandas()
        read[name] = frame.sort_values(["event_timestamp", "member_id", "item_id"]).reset_index(drop=True)
    assert read["comma"]["dwell_s"].isna().sum() == 3 * SMALL.days and len(read["comma"]) == SMALL.days * 120
    pd.testing.assert_frame_equal(read["tab_na"], read["comma"])
    pd.testing.assert_frame_equal(read["no_header"], read["comma"])


def test_derived_columns_a_task_from_a_raw_column_and_a_constant_scenario(spark, tmp_path, shop):
    """`columns.<name>.expr`: a task that is an expression of a raw column and a scenario that is a constant, cast
    to their declared types; an expression Spark cannot resolve, one that fails on a value and a task that is not
    0/1 each name the key and the fix, writing nothing."""
    def events_with(**derived) -> dict:
        events = copy.deepcopy(shop_config(tmp_path, shop[0])["sources"]["events"])
        events["columns"].update(derived)
        return {"events": events}

    long_view = {"expr": "try_cast(dwell_s AS DOUBLE) >= 30", "type": "boolean"}
    cfg = config(tmp_path, shop[0], events_with(purchase=long_view, surface={"expr": "'all'"}))
    read = read_checked(spark, cfg, precheck(cfg).located[SourceRole.events])  # what ingest writes, checked
    assert dict(read.frame.dtypes)["purchase"] == "int" and read.checked.rows == SMALL.days * SMALL.events_per_day
    got = read.frame.select("surface", "purchase", "dwell_s").toPandas()
    assert set(got["surface"]) == {"all"}
    assert got["purchase"].tolist() == (got["dwell_s"] >= 30).astype(int).tolist()

    bad = {"unresolved": ({"expr": "no_such_fn(dwell_s) > 1", "type": "boolean"},
                          "sources.events.columns.purchase.expr 'no_such_fn(dwell_s) > 1' does not read against the "
                          "source ([UNRESOLVED_ROUTINE]"),
           "fails": ({"expr": "dwell_s >= 30", "type": "boolean"},
                     "the expression of sources.events.columns.purchase.expr ('dwell_s >= 30') fails on a value: "
                     "[CAST_INVALID_INPUT]"),
           "not_binary": ({"expr": "round(try_cast(dwell_s AS DOUBLE))", "type": "bigint"},
                          "derived column 'purchase' (= round(try_cast(dwell_s AS DOUBLE))) has")}
    for case, (purchase, expect) in bad.items():
        lake = tmp_path / case
        with pytest.raises(IngestError) as err:
            ingest(spark, config(lake, shop[0], events_with(purchase=purchase)), days=[D[0]])
        assert expect in str(err.value), case
        assert not (lake / "lakehouse").exists()
    assert "make sources.events.columns.purchase.expr a condition, e.g. \"(round(try_cast(dwell_s AS DOUBLE))) >= 4\"" \
        in str(err.value)


def _edit_csv(path: Path, column: str, value: str) -> None:
    frame = pd.read_csv(path, dtype=str)
    frame.loc[frame.index[7], column] = value
    frame.to_csv(path, index=False)


def _damage(data: Path, case: str) -> dict:
    """Break the copy of the shop in `data` one way; returns config changes (sources, schema) for the case."""
    log = sorted((data / "events").glob("*.csv"))[1]
    if case == "unparseable":
        _edit_csv(log, "event_ts", "noon")
    elif case == "task":
        _edit_csv(log, "clicked", "maybe")
    elif case == "missing":
        pd.read_parquet(data / "users.parquet").drop(columns=["country"]).to_parquet(data / "users.parquet")
    elif case == "json_missing":
        lines = [json.loads(x) for x in (data / "items.jsonl").read_text().splitlines()]
        (data / "items.jsonl").write_text("".join(json.dumps({("label" if k == "brand" else k): v
                                                              for k, v in x.items()}) + "\n" for x in lines))
    elif case == "native_type":
        users = pd.read_parquet(data / "users.parquet")
        users.assign(tenure_days=users["tenure_days"] + 0.5).to_parquet(data / "users.parquet")
    elif case == "unit":
        return {"sources": {"events": {**shop_config(data, data)["sources"]["events"], "time_unit": "ms"}}}
    elif case == "duplicate":
        with (data / "items.jsonl").open("a") as fh:
            fh.write((data / "items.jsonl").read_text().splitlines()[3] + "\n")
    elif case == "undeclared":
        schema = shop_config(data, data)["schema"]
        return {"schema": {**schema, "user_fields": schema["user_fields"] + [{"name": "income"}]}}
    elif case == "tab_separated":
        _events_as(data, lambda frame, path: frame.to_csv(path, sep="\t", index=False))
    elif case == "no_files":
        return {"sources": {"events": {**shop_config(data, data)["sources"]["events"], "path": "nope/*.csv"}}}
    return {}


@pytest.mark.parametrize("case, expect", [
    ("unparseable", "column 'event_ts' has 1 value(s) that are not BIGINT (e.g. 'noon'); fix the file or "
                    "sources.events.columns.ts.type in lfm.yaml"),
    ("task", "column 'clicked' has 1 value(s) that are not 0/1 or true/false (e.g. 'maybe'); a task is a 0/1 "
             "(or true/false) label: derive it from the raw column with an expression, e.g. "
             "sources.events.columns.click: {expr: \"clicked >= 4\", type: boolean}; or fix the file"),
    ("missing", "users.parquet): missing columns ['country']"),
    ("json_missing", "items.jsonl): missing columns ['brand'] (no record has them)"),
    ("native_type", "column 'tenure_days' is double in the source and does not read as INT without loss: change "
                    "sources.users.columns.tenure_days.type (e.g. to double)"),
    ("unit", "when column 'event_ts' is read in unit ms: is sources.events.time_unit right"),
    ("duplicate", "key 'item_id' is not unique (e.g. ['sku-00003'])"),
    ("undeclared", "schema.user_fields 'income' is not a column of sources.users or sources.events: add it to "
                   "sources.users.columns, or remove it from schema.user_fields"),
    ("no_files", "no events file matching 'nope/*.csv'"),
    ("tab_separated", "its header reads as ['event_ts\\tmember\\tproduct\\tpage\\tclicked\\tpurchased\\tdwell_s'] "
                      "with delimiter ','; the file looks '\\t'-separated: set csv: {delimiter: \"\\t\"} on the source"),
])
def test_bad_input_names_source_column_key_and_sample(spark, tmp_path, shop, case, expect):
    data = tmp_path / "data"
    shutil.copytree(shop[0], data)
    changes = _damage(data, case)
    conf = shop_config(tmp_path, data)
    conf["sources"].update(changes.get("sources", {}))
    conf["schema"] = changes.get("schema", conf["schema"])
    cfg = config_from_dict(conf, "<test>", str(tmp_path))
    with pytest.raises(IngestError) as err:
        ingest(spark, cfg, dry_run=case == "duplicate")  # a dry run runs the same checks
    assert expect in str(err.value)
    assert not (tmp_path / "lakehouse").exists()

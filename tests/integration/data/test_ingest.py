"""Ingest into real Delta tables: typed columns, idempotent reruns, and bad input that writes nothing."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from deltalake import DeltaTable as RustDeltaTable
from pyspark.sql import types as T

from tests.support.config import KUAIRAND
from lfm.names import BadInput
from lakehouse.delta_io import table_exists
from spark_jobs.ingest import IngestError, ingest

DAYS = [dt.date(2022, 4, 25) + dt.timedelta(days=i) for i in range(4)]


def _events(spark, cfg):
    return spark.read.format("delta").load(cfg.table_path("events"))


def test_synthetic_ingest_is_typed_partitioned_and_idempotent(spark, cfg, synth_source):
    first = ingest(spark, cfg, synth_source)
    assert first.days == DAYS and first.events_rows == 6000
    assert (first.users_rows, first.items_rows) == (300, 120)
    events = _events(spark, cfg)
    types = dict((f.name, f.dataType) for f in events.schema.fields)
    assert types["ds"] == T.DateType() and types["event_timestamp"] == T.TimestampType()
    assert types["user_id"] == T.IntegerType() and types["time_ms"] == T.LongType()
    assert not any(isinstance(t, T.StringType) for n, t in types.items() if n != "tab")
    # event_timestamp is the instant of time_ms; ds is the local (Asia/Shanghai) calendar day of `date`.
    row = events.selectExpr("time_ms", "unix_millis(event_timestamp) AS ms", "ds", "date").first()
    assert row.time_ms == row.ms and int(row.ds.strftime("%Y%m%d")) == row.date

    second = ingest(spark, cfg, synth_source)  # rerun: same counts, no duplicates
    assert second.events_rows == 6000 and _events(spark, cfg).count() == 6000
    one_day = ingest(spark, cfg, synth_source, [DAYS[1]])  # re-ingest one day replaces only it
    assert one_day.days == [DAYS[1]] and one_day.events_rows == 1500 and _events(spark, cfg).count() == 6000
    users = spark.read.format("delta").load(cfg.table_path("users"))
    assert dict(users.dtypes)["onehot_feat4"] == "double" and users.count() == 300
    # An independent Delta reader (delta-rs, no Spark) reads the same tables.
    rust = RustDeltaTable(cfg.table_path("events"))
    assert rust.to_pyarrow_table().num_rows == 6000
    assert RustDeltaTable(cfg.table_path("items")).to_pyarrow_table().num_rows == 120


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _log(folder: Path) -> Path:
    return next(folder.glob("log_standard_*.csv"))


def _rewrite(path: Path, fn) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(fn(lines)))


def _no_tables(cfg) -> bool:
    return not any(Path(cfg.table_path(t)).exists() for t in ("events", "users", "items"))


@pytest.mark.parametrize("case, expect", [
    ("missing_file", "no users file matching"),
    ("missing_column", "missing columns ['tab']"),
    ("renamed_column", "unexpected columns ['tab_id']"),
    ("mistyped_value", "column 'time_ms' has 1 value(s) that are not BIGINT"),
    ("bad_date", "not yyyymmdd dates"),
    ("truncated", "truncated"),
    ("binary_garbage", "not a UTF-8 CSV"),
])
def test_bad_input_stops_and_writes_nothing(spark, cfg, synth_source, tmp_path, case, expect):
    src = _copy(synth_source, tmp_path / "src")
    log = _log(src)
    if case == "missing_file":
        next(src.glob("user_features_*.csv")).unlink()
    elif case == "missing_column":
        _rewrite(log, lambda ls: [l.rsplit(",", 1)[0] + "\n" for l in ls])
    elif case == "renamed_column":
        _rewrite(log, lambda ls: [ls[0].replace(",tab\n", ",tab_id\n")] + ls[1:])
    elif case == "mistyped_value":
        _rewrite(log, lambda ls: ls[:5] + [ls[5].replace(ls[5].split(",")[4], "12:30pm", 1)] + ls[6:])
    elif case == "bad_date":
        _rewrite(log, lambda ls: ls[:3] + [ls[3].replace(",2022042", ",2022992", 1)] + ls[4:])
    elif case == "truncated":
        data = log.read_bytes()
        log.write_bytes(data[: len(data) // 2 + 7])
    elif case == "binary_garbage":
        log.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 20)
    with pytest.raises(IngestError) as err:
        ingest(spark, cfg, src)
    assert expect in str(err.value)
    assert _no_tables(cfg)


def test_bad_input_keeps_previous_data(spark, cfg, synth_source, tmp_path):
    ingest(spark, cfg, synth_source)
    before = _events(spark, cfg).count()
    with pytest.raises(IngestError, match="no events for ds"):
        ingest(spark, cfg, synth_source, [dt.date(2022, 6, 1)])
    src = _copy(synth_source, tmp_path / "src")
    _rewrite(_log(src), lambda ls: ls[:5] + [ls[5].replace(ls[5].split(",")[1], "video-7", 1)] + ls[6:])
    with pytest.raises(IngestError, match="'video_id'"):
        ingest(spark, cfg, src)
    assert _events(spark, cfg).count() == before
    with pytest.raises(BadInput, match="does not exist"):
        ingest(spark, cfg, tmp_path / "nowhere")


def test_dry_run_checks_and_reports_but_writes_nothing(spark, cfg, synth_source):
    report = ingest(spark, cfg, synth_source, dry_run=True)
    assert report.dry_run and report.days == DAYS == report.days_found and report.events_rows == 6000
    assert report.source_rows == {"events": 6000, "users": 300, "items": 120, "item_statistics": 120}
    assert report.snapshots == {"users": DAYS[0], "items": DAYS[0]}
    roles = {(m.source, m.name): m.role for m in report.mapping}
    assert roles[("events", "tab")] == "scenario" and roles[("events", "time_ms")] == "event time (ms)"
    assert roles[("items", "video_id")] == "item key" and roles[("events", "is_click")] == "task (0/1)"
    assert _no_tables(cfg)
    with pytest.raises(IngestError, match="is relative and no folder was given: pass --source DIR or set "
                                          "sources.root"):
        ingest(spark, cfg)


@pytest.mark.slow
@pytest.mark.skipif(not KUAIRAND.exists(), reason="the real KuaiRand-Pure copy is not beside the repo")
def test_real_kuairand_ingest(spark, cfg, compiled):
    """The whole real log: 228,329 events (duplicates kept) in 14 days, 27,285 users, 7,583 items; twice."""
    for _ in range(2):
        result = ingest(spark, cfg, KUAIRAND)
        assert result.events_rows == 228_329 and len(result.days) == 14
        assert (result.days[0], result.days[-1]) == (dt.date(2022, 4, 25), dt.date(2022, 5, 8))
        assert (result.users_rows, result.items_rows) == (27_285, 7_583)
    rust = RustDeltaTable(cfg.table_path("events"))
    table = rust.to_pyarrow_table(columns=["ds"])
    assert table.num_rows == 228_329 and len(set(table.column("ds").to_pylist())) == 14
    assert RustDeltaTable(cfg.table_path("users")).to_pyarrow_table().num_rows == 27_285


def test_real_kuairand_slice(spark, cfg, tmp_path):
    """A small slice of the real files takes the same path (when the shared data exists)."""
    if not KUAIRAND.exists():
        pytest.skip("the real KuaiRand-Pure copy is not beside the repo")
    src = tmp_path / "slice"
    src.mkdir()
    for f in KUAIRAND.glob("*.csv"):
        if f.name.startswith("log_standard"):
            with f.open() as fh:
                (src / f.name).write_text("".join(next(fh) for _ in range(3001)))
        else:
            shutil.copy(f, src / f.name)
    result = ingest(spark, cfg, src)
    assert result.events_rows == 3000 and result.days == [dt.date(2022, 4, 25)]
    assert table_exists(spark, cfg.table_path("items"))

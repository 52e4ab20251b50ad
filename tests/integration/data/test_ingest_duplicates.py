"""Exact duplicate events in a day's drop (`sources.events.duplicates`): counted by ingest in its checking pass,
reported by `lfm ingest` and its dry run, then kept, dropped or refused; the Delta table is read back with
delta-rs (no Spark) as the independent witness of what was written."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable as RustDeltaTable

from cli.main import main
from lfm.config import LfmConfig, config_from_dict
from spark_jobs.ingest import IngestError, ingest
from tests.support.shop import ShopSpec, days, shop_config, write_shop

SPEC = ShopSpec(users=30, items=12, days=2, events_per_day=300, seed=3)
D = days(SPEC.days)
COPIES = 200  # rows of D[1]'s file appended again, as a drop that holds part of a file twice


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> tuple[Path, Path, int]:
    """(the clean drop, the same drop with COPIES rows of D[1] repeated, the clean drop's rows)."""
    root = tmp_path_factory.mktemp("dupes")
    rows = write_shop(root / "clean", SPEC)["events"]
    shutil.copytree(root / "clean", root / "dirty")
    day_file = root / "dirty" / "events" / f"ratings_{D[1]:%Y%m%d}.csv"
    header, *lines = day_file.read_text().splitlines(keepends=True)
    # One repeated row has an empty dwell_s: a null must not hide a duplicate from the count.
    cells = lines[0].split(",")
    lines[0] = ",".join(cells[:6] + [""] + cells[7:])
    day_file.write_text("".join([header, *lines, *lines[:COPIES]]))
    return root / "clean", root / "dirty", rows


def _config(tmp_path: Path, data: Path, policy: str | None = None) -> LfmConfig:
    conf = shop_config(tmp_path, data)
    if policy:
        conf["sources"]["events"] = {**conf["sources"]["events"], "duplicates": policy}
    return config_from_dict(conf, "<test>", str(tmp_path))


def _written(cfg: LfmConfig) -> pa.Table:
    """The events table as delta-rs reads it: the declared columns only (ds and event_timestamp follow them)."""
    table = RustDeltaTable(cfg.table_path("events")).to_pyarrow_table()
    return table.select(list(cfg.sources.events.columns))


def _distinct(table: pa.Table) -> int:
    return table.group_by(table.column_names).aggregate([]).num_rows


def test_clean_drop_reports_none(spark, tmp_path, drops):
    clean, _, rows = drops
    result = ingest(spark, _config(tmp_path, clean, "refuse"), dry_run=True)
    assert (result.duplicate_rows, result.events_rows) == (0, rows)


def test_keep_writes_every_copy_and_reports_the_count(spark, tmp_path, drops, capsys):
    _, dirty, rows = drops
    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump(shop_config(tmp_path, dirty)))  # no policy: keep is the default
    assert main(["--config", str(conf), "ingest", "--dry-run"]) == 0
    assert f"duplicates: {COPIES} exact duplicate event rows would be kept (sources.events.duplicates: keep)" in \
        capsys.readouterr().out
    assert main(["--config", str(conf), "ingest"]) == 0
    out = capsys.readouterr().out
    assert f"events {rows + COPIES:,} rows" in out and f"ingest: {COPIES} exact duplicate event rows kept" in out
    written = _written(_config(tmp_path, dirty))
    assert written.num_rows == rows + COPIES and _distinct(written) == rows


def test_drop_writes_one_copy_of_each_and_logs_the_count(spark, tmp_path, drops, caplog):
    _, dirty, rows = drops
    cfg = _config(tmp_path, dirty, "drop")
    with caplog.at_level(logging.INFO, logger="lfm.ingest"):  # the line run-daily's ingest step logs
        result = ingest(spark, cfg, run_id="dupes1")
    assert f"run_id=dupes1 ingest events rows={rows} " in caplog.text
    assert f"duplicate_rows={COPIES} duplicates=drop" in caplog.text
    assert (result.duplicate_rows, result.events_rows, result.days) == (COPIES, rows, D)
    written = _written(cfg)
    assert written.num_rows == rows == _distinct(written)
    assert written.column("dwell_s").null_count == 1  # the repeated row with a null kept once


def test_refuse_names_file_day_count_and_key_and_writes_nothing(spark, tmp_path, drops):
    clean, dirty, rows = drops
    cfg = _config(tmp_path, dirty, "refuse")
    first = ingest(spark, cfg, days=[D[0]])  # only the days asked for count: D[0] has no duplicates
    assert (first.duplicate_rows, first.events_rows) == (0, SPEC.events_per_day)
    versions = {t: RustDeltaTable(cfg.table_path(t)).version() for t in ("events", "users", "items")}
    for dry_run in (True, False):  # a dry run runs the same check
        with pytest.raises(IngestError) as err:
            ingest(spark, cfg, dry_run=dry_run)
        message = str(err.value)
        assert f"{COPIES} exact duplicate event row(s)" in message and f"on {D[1]} ({COPIES})" in message
        assert f"in {dirty / 'events' / f'ratings_{D[1]:%Y%m%d}.csv'};" in message
        assert "set sources.events.duplicates in lfm.yaml to drop" in message
    assert {t: RustDeltaTable(cfg.table_path(t)).version() for t in versions} == versions
    assert _written(cfg).num_rows == SPEC.events_per_day

"""Faults the daily export must survive, on real Spark and Delta (no mocks): a refresh killed with SIGKILL in the
middle of its Delta writes, and broken raw input reaching `run-daily`. (Two runs of one day at once, Redis down
during materialize and a quarantined day through `run-daily` are in tests/test_daily.py.)"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from conftest import REPO, make_config

D1 = dt.date(2022, 4, 27)
EXPORTS = ("ur", "ir", "cr_user", "cr_item")
STATES = ("cr_user_state", "cr_item_state")
KEYS = {"ur": "user_id", "cr_user": "user_id", "cr_user_state": "user_id",
        "ir": "video_id", "cr_item": "video_id", "cr_item_state": "video_id"}


@pytest.fixture(scope="module")
def world(spark, synth_source, tmp_path_factory):
    from test_refresh_jobs import build_world

    return build_world(spark, synth_source, tmp_path_factory.getbasetemp())


def day_rows(spark, cfg, table: str, version: str) -> list:
    """The (D1, version) rows of a table as a reader sees them now, sorted."""
    df = spark.read.format("delta").load(cfg.table_path(table))
    return sorted(df.where(f"ds = DATE'{D1}' AND model_version = '{version}'").drop("event_timestamp").collect())


def assert_one_clean_day(rows: list, table: str, version: str) -> None:
    """Nothing duplicated, one version, one CR layer."""
    keys = [r[KEYS[table]] for r in rows]
    assert rows and len(keys) == len(set(keys)), f"{table}: duplicated keys"
    assert {r["model_version"] for r in rows} == {version}
    if "cr_layer" in rows[0].asDict():
        assert len({r["cr_layer"] for r in rows}) == 1


def data_files(table_dir: Path) -> set[str]:
    return {str(p) for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts}


@pytest.mark.slow
def test_refresh_killed_during_the_delta_write_leaves_the_previous_version(spark, world, tmp_path):
    """`lfm refresh` in its own process group, SIGKILLed as soon as its first data file appears on disk."""
    from models.registry import Registry
    from spark_jobs.delta_io import commit_info, table_version
    from spark_jobs.refresh import refresh, tower_order

    cfg = world.config("killed")
    points = Registry(cfg).card(world.model_a).cr_points
    old_layer, new_layer = next((a, b) for a in tower_order(points) for b in tower_order(points)
                                if points[a] != points[b])  # other widths: old and new rows are told apart
    refresh(spark, cfg, D1, world.model_a, cr_layer=old_layer, cold_start=True, run_id="before")
    tables = EXPORTS + STATES + ("refresh_log",)
    before = {t: table_version(spark, cfg.table_path(t)) for t in tables}
    old = {t: day_rows(spark, cfg, t, world.model_a) for t in EXPORTS + STATES}
    dirs = {t: Path(cfg.table_path(t)) for t in EXPORTS + STATES}
    files_before = {t: data_files(d) for t, d in dirs.items()}

    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump({"lakehouse": cfg.lakehouse, "registry": {"path": str(world.registry)},
                                    "quality": {"enabled": False}}))
    proc = subprocess.Popen([sys.executable, "-m", "lfm.cli", "--config", str(conf), "refresh", "--ds", str(D1),
                             "--model", world.model_a, "--layer", new_layer, "--cold-start", "--no-gate",
                             "--run-id", "killed"], cwd=str(REPO), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, killed_at = time.monotonic() + 300, None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(data_files(d) - files_before[t] for t, d in dirs.items()):
                os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers
                killed_at = time.monotonic()
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate(timeout=60)[0]
    assert killed_at is not None, f"refresh ended before it wrote anything (rc {proc.returncode}):\n{output[-3000:]}"
    assert proc.returncode == -signal.SIGKILL

    # Readers: every table is at its previous version or at a commit of the killed run that Delta made whole;
    # the states (written last) and the refresh log did not move, so the last complete day is still `before`.
    orphans = 0
    for t in EXPORTS + STATES:
        v = table_version(spark, cfg.table_path(t))
        rows = day_rows(spark, cfg, t, world.model_a)
        assert_one_clean_day(rows, t, world.model_a)
        if v == before[t]:
            assert rows == old[t]
        else:
            assert v == before[t] + 1 and commit_info(spark, cfg.table_path(t))["userMetadata"]["run_id"] == "killed"
        live = {unquote(urlparse(f).path) for f in spark.read.format("delta").load(cfg.table_path(t)).inputFiles()}
        orphans += len(data_files(dirs[t]) - files_before[t] - live)
    assert orphans > 0  # the kill did land inside a write: files no commit refers to (Delta never reads them)
    for t in STATES + ("refresh_log",):
        assert table_version(spark, cfg.table_path(t)) == before[t]
    log = spark.read.format("delta").load(cfg.table_path("refresh_log")).collect()
    assert [r["run_id"] for r in log] == ["before"]

    # The rerun completes: every table holds exactly the new day, once.
    result = refresh(spark, cfg, D1, world.model_a, cr_layer=new_layer, cold_start=True, run_id="rerun")
    for t in EXPORTS + STATES:
        rows = day_rows(spark, cfg, t, world.model_a)
        assert_one_clean_day(rows, t, world.model_a)
        assert len(rows) == result.rows[t]
        if t.startswith("cr_"):
            assert {r["cr_layer"] for r in rows} == {new_layer}
    assert {r["cr_layer"] for r in spark.read.format("delta").load(cfg.table_path("refresh_log"))
            .where("run_id = 'rerun'").collect()} == {new_layer}


@pytest.mark.parametrize("damage, message", [
    ("truncated", "truncated"),
    ("changed_schema", "unexpected columns ['user_segment']"),
])
def test_broken_raw_file_stops_run_daily_at_ingest(spark, synth_source, tmp_path, damage, message):
    """run-daily with --source: clear error, the ingest step recorded failed, nothing written, nothing after it."""
    from spark_jobs import runs
    from test_daily import cli

    src = tmp_path / "raw"
    shutil.copytree(synth_source, src)
    if damage == "truncated":
        log = src / "log_standard_synth.csv"
        data = log.read_bytes()
        log.write_bytes(data[: len(data) // 2 + 7])
    else:
        users = src / "user_features_synth.csv"
        lines = users.read_text().splitlines(keepends=True)
        users.write_text(lines[0].rstrip("\n") + ",user_segment\n" + "".join(x.rstrip("\n") + ",7\n" for x in lines[1:]))
    cfg = make_config(tmp_path)
    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump({"lakehouse": cfg.lakehouse, "registry": {"path": cfg.registry.path}}))
    res = cli("--config", str(conf), "run-daily", "--ds", str(D1), "--source", str(src), "--cold-start")
    assert res.code == 2
    assert "step 'ingest' of 2022-04-27 failed" in res.err and message in res.err
    latest = runs.latest_by_step(spark, cfg, D1)
    assert set(latest) == {"ingest"} and latest["ingest"].status == "failed"
    assert message in latest["ingest"].error and "IngestError" in latest["ingest"].error
    lake = Path(cfg.lakehouse)
    assert not {"events", "users", "items"} & {p.name for p in lake.iterdir()}  # no input table written

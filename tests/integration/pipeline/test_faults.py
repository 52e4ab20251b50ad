"""Broken raw input reaching `run-daily`, on real Spark and Delta (no mocks). (SIGKILL at each phase of refresh and
materialize is in tests/integration/pipeline/test_releases.py; two runs of one day at once, Redis down during
materialize and a quarantined day through `run-daily` in test_daily.py.)"""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.cli import cli
from tests.support.config import make_config

D1 = dt.date(2022, 4, 27)


@pytest.mark.parametrize("damage, message", [
    ("truncated", "truncated"),
    ("changed_schema", "unexpected columns ['user_segment']"),
])
def test_broken_raw_file_stops_run_daily_at_ingest(spark, synth_source, tmp_path, damage, message):
    """run-daily with --source: clear error, the ingest step recorded failed, nothing written, nothing after it."""
    from pipeline import runs

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
    latest = runs.latest_by_step(cfg, D1)
    assert set(latest) == {"ingest"} and latest["ingest"].status == "failed"
    assert message in latest["ingest"].error and "IngestError" in latest["ingest"].error
    lake = Path(cfg.lakehouse)
    assert not {"events", "users", "items"} & {p.name for p in lake.iterdir()}  # no input table written

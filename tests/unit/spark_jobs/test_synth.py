"""Synthetic data: the KuaiRand layout, deterministic per seed, with planted signal and skewed scenarios."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from lfm.config.sources import default_sources
from spark_jobs.synth import SynthSpec, make_world, write_synthetic


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_layout_and_determinism(tmp_path):
    spec = SynthSpec(users=200, items=80, days=2, events_per_day=700, seed=3, chunk_rows=300)
    write_synthetic(spec, tmp_path / "a")
    write_synthetic(spec, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    for _, raw in default_sources().declared():  # the KuaiRand release layout, as declared in config
        (path,) = (tmp_path / "a").glob(raw.path)
        assert list(pd.read_csv(path, nrows=1).columns) == raw.raw_names
    log = pd.read_csv(next((tmp_path / "a").glob("log_standard_*.csv")))
    assert len(log) == 1400 and sorted(log["date"].unique()) == [20220425, 20220426]
    other = tmp_path / "c"
    write_synthetic(SynthSpec(users=200, items=80, days=2, events_per_day=700, seed=4), other)
    assert _digest(other) != _digest(tmp_path / "a")


def test_planted_structure_is_learnable(tmp_path):
    spec = SynthSpec(users=400, items=150, days=2, events_per_day=20_000, seed=1)
    write_synthetic(spec, tmp_path)
    log = pd.read_csv(next(tmp_path.glob("log_standard_*.csv")))
    world = make_world(spec)
    # The true latent affinity predicts clicks well above chance.
    affinity = (world.user_f[log.user_id] * world.item_f[log.video_id]).sum(1)
    assert roc_auc_score(log.is_click, affinity) > 0.65
    # Tasks are correlated: like and long view happen only after a click.
    assert (log.is_like <= log.is_click).all() and (log.long_view <= log.is_click).all()
    # Scenario sizes are skewed like the real log: one big tab, small ones present.
    shares = log.tab.value_counts(normalize=True)
    assert shares.idxmax() == 1 and shares.max() > 0.6 and (shares < 0.01).sum() >= 5
    # Day boundaries are local (Asia/Shanghai) days: every event's local date matches its `date` column.
    local = pd.to_datetime(log.time_ms, unit="ms", utc=True).dt.tz_convert("Asia/Shanghai").dt.strftime("%Y%m%d")
    assert (local.astype(int) == log.date).all()
    assert np.isfinite(log.play_time_ms).all()


def test_split_days_writes_one_complete_layout_folder_per_day(tmp_path):
    spec = SynthSpec(users=50, items=20, days=2, events_per_day=300, seed=5, chunk_rows=120)
    write_synthetic(spec, tmp_path / "whole")
    write_synthetic(spec, tmp_path / "split", split_days=True)
    whole = pd.read_csv(next((tmp_path / "whole").glob("log_standard_*.csv")))
    days = sorted(p for p in (tmp_path / "split").iterdir())
    assert [p.name for p in days] == ["2022-04-25", "2022-04-26"]
    for folder in days:
        for role, raw in default_sources().declared():
            (path,) = folder.glob(raw.path)
            if role.value != "events":  # the feature files are the same bytes as the whole data set's
                assert path.read_bytes() == next((tmp_path / "whole").glob(raw.path)).read_bytes()
    logs = [pd.read_csv(next(d.glob("log_standard_*.csv"))) for d in days]
    assert [sorted(x["date"].unique()) for x in logs] == [[20220425], [20220426]]
    pd.testing.assert_frame_equal(pd.concat(logs, ignore_index=True), whole)

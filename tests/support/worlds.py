"""A small synthetic lakehouse with three tiny registered models, built once per test session (real Spark, Delta,
torch): the world of the refresh, daily, fault and cluster tests."""
from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc

from inference import decay
from lfm.config import LfmConfig
from lfm.contract import day_end_ms
from tests.support.config import make_config

SMALL_MODEL = {"embedding_dim": 4, "user_tower": [16], "item_tower": [16], "cross_layers": 1, "dnn": [16, 8]}
SMALL_TRAIN = {"max_epochs": 1, "batch_size": 512}
TZ = "Asia/Shanghai"
D1, D2 = dt.date(2022, 4, 27), dt.date(2022, 4, 28)
NEW_ID = 999_999  # a user and an item that appear only on D1, with unseen / NaN / null feature values
INPUTS = ("events", "users", "items")
ALL = ("ur", "ir", "cr_user", "cr_item", "cr_user_state", "cr_item_state")


@dataclass
class World:
    root: Path
    registry: Path
    model_a: str  # the model under test
    model_b: str  # another seed: a second version for "never mixed"
    model_nan: str  # model A with a NaN weight: produces NaN vectors

    def config(self, name: str, registry: Path | None = None, **overrides) -> LfmConfig:
        """A config whose lakehouse `name` starts with copies of the ingested input tables."""
        root = self.root / name
        lake = root / "lakehouse"
        if not lake.exists():
            lake.mkdir(parents=True)
            for t in INPUTS:
                shutil.copytree(self.root / "base" / "lakehouse" / t, lake / t)
        quality = overrides.pop("quality", {"enabled": False})
        return make_config(root, registry={"path": str(registry or self.registry)}, model=SMALL_MODEL,
                           train=SMALL_TRAIN, quality=quality, **overrides)


def _append_like(path: Path, changes: dict[str, str], select=lambda row: True, copies: int = 1) -> None:
    """Append `copies` rows copied from the first matching data row, with `changes` applied (text-level CSV)."""
    import csv

    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [r for r in reader if select(dict(zip(header, r)))][:copies]
    with path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        for r in rows:
            writer.writerow([changes.get(c, v) for c, v in zip(header, r)])


def _add_unseen_rows(src: Path) -> None:
    """One new user and item with an unseen category, a NaN and a null numeric value, and events on D1."""
    new = str(NEW_ID)
    _append_like(src / "user_features_synth.csv",
                 {"user_id": new, "user_active_degree": "never_seen_before", "onehot_feat12": "NaN"})
    _append_like(src / "video_features_basic_synth.csv", {"video_id": new, "tag": "unseen_tag", "video_duration": ""})
    _append_like(src / "video_features_statistic_synth.csv", {"video_id": new})
    _append_like(src / "log_standard_synth.csv", {"user_id": new, "video_id": new},
                 select=lambda r: r["date"] == "20220427", copies=3)


def build_world(spark, synth_source: Path, base: Path) -> World:
    """Ingest the synthetic source (plus unseen rows) and register three tiny models; reused if already built."""
    import torch

    from models.training.pretrain import pretrain
    from models.registry import Registry, load_checkpoint
    from spark_jobs.ingest import ingest
    from spark_jobs.samples import samples_arrow

    root = base / "refresh_world"
    ready = root / "ready.txt"
    registry = root / "registry"
    if ready.exists():
        a, b, n = ready.read_text().split()
        return World(root, registry, a, b, n)
    shutil.rmtree(root, ignore_errors=True)
    src = root / "src"
    shutil.copytree(synth_source, src)
    _add_unseen_rows(src)
    cfg = make_config(root / "base", registry={"path": str(registry)}, model=SMALL_MODEL, train=SMALL_TRAIN,
                      quality={"enabled": False})
    ingest(spark, cfg, src)
    train, valid = samples_arrow(spark, cfg, ["2022-04-25"]), samples_arrow(spark, cfg, ["2022-04-26"])
    reg = Registry(cfg)
    versions = []
    for seed in (0, 1):
        res = pretrain(train, valid, cfg, seed=seed, progress=None)
        versions.append(reg.register(res.model, res.encoders, {"seed": seed}).model_version)
    ck = load_checkpoint(reg.path(versions[0]), cfg.schema)
    with torch.no_grad():
        next(ck.model.user_tower.parameters()).view(-1)[0] = float("nan")
    versions.append(reg.register(ck.model, ck.encoders, {"broken": True}).model_version)
    ready.write_text(" ".join(versions))
    return World(root, registry, *versions)


def rows_of(spark, cfg: LfmConfig, table: str, version: str, ds: dt.date | None = None, at: int | None = None):
    """Sorted rows (pyspark Rows: tuples with names) of one model version, optionally one day / table version."""
    from lakehouse.delta_io import read_table

    df = read_table(spark, cfg.table_path(table), at).where(f"model_version = '{version}'")
    if ds is not None:
        df = df.where(f"ds = DATE'{ds}'")
    return sorted(df.collect())


def snapshot(spark, cfg, version, ds=None):
    return {t: rows_of(spark, cfg, t, version, ds) for t in ALL}




def refresh(spark, cfg: LfmConfig, ds, model: str | None = None, layer: str | None = None, cold_start: bool = False,
            run_id: str | None = None, gate: bool = False):
    """Write (and with `gate`, audit and publish) one day of `model`'s export under `cfg` through the pipeline;
    returns the day's candidate (rows, table versions, spec)."""
    from pipeline.export import write_and_release
    from pipeline.spec import resolve_export

    return write_and_release(spark, cfg, resolve_export(cfg, model, layer), ds, cold_start, run_id, gate).candidate


def backfill(spark, cfg: LfmConfig, first, last, model: str | None = None, layer: str | None = None,
             warmup_days: int = 0, cold_start: bool = False, gate: bool = False):
    """`lfm backfill` through the pipeline; returns the days' candidates."""
    from pipeline.export import backfill_and_release
    from pipeline.spec import resolve_export

    days = backfill_and_release(spark, cfg, resolve_export(cfg, model, layer), first, last, warmup_days, cold_start,
                                gate=gate)
    return [d.candidate for d in days]


def reference_states(spark, cfg, world, layer):
    """The decay chain recomputed outside Spark: Extractor over each day's samples + inference.decay."""
    from inference.extract import Extractor
    from models.registry import Registry
    from spark_jobs.samples import samples_arrow

    ex = Extractor(Registry(cfg).path(world.model_a))
    out, prev = {}, None
    for day in (D1, D2):
        tab = samples_arrow(spark, cfg, [day])
        t_ms = pc.cast(tab.column("event_timestamp"), "int64").to_numpy() // 1000
        end = day_end_ms(day, TZ)
        assert (t_ms < end).all()
        cr = ex.cross_vectors(tab, layer)
        w = decay.sample_weights(t_ms, end, cfg.refresh.tau_hours)
        keys, sums = decay.group_sum(tab.column("user_id").to_numpy(), cr, w)
        if prev is None:
            state = (keys, sums)
        else:
            state = decay.decay_step(prev[0], prev[1], day_end_ms(day - dt.timedelta(days=1), TZ), keys, sums,
                                     end, cfg.refresh.tau_hours)
        out[day] = prev = state
    return out

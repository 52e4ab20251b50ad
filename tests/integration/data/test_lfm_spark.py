"""The LFM against the real lakehouse: samples via Spark, deterministic pretraining, extraction in Spark workers,
and the CLI verbs. Shares the session `spark`; one synthetic ingest per module."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import yaml

from tests.support.config import make_config
from inference.extract import Extractor, vectors_to_arrow
from cli.main import main
from cli.verbs.models import parse_days
from lfm.names import BadInput
from models.registry import Registry
from models.training.pretrain import pretrain
from spark_jobs.ingest import ingest
from spark_jobs.samples import SamplesError, samples, samples_arrow

D = [dt.date(2022, 4, 25) + dt.timedelta(days=i) for i in range(4)]
SMALL = {"embedding_dim": 4, "user_tower": [16, 8], "item_tower": [16, 8], "cross_layers": 2, "dnn": [16, 8]}
TRAIN = {"batch_size": 256, "max_epochs": 2, "threads": 1, "lr": 1e-2}


@pytest.fixture(scope="module")
def lake(spark, synth_source, tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("lfm_lake"), model=SMALL, train=TRAIN)
    ingest(spark, cfg, synth_source)
    return cfg


@pytest.fixture(scope="module")
def splits(spark, lake):
    return {name: samples_arrow(spark, lake, days) for name, days in
            (("train", D[:2]), ("valid", D[2:3]), ("test", D[3:]))}


@pytest.mark.slow
def test_samples_join_events_users_items(spark, lake):
    s = lake.schema
    df = samples(spark, lake, D[:2])
    expected = list(dict.fromkeys([s.user_key, s.item_key, *s.feature_names, s.scenario, *s.tasks, s.timestamp,
                                   "event_timestamp", "ds"]))
    assert df.columns == expected
    events = spark.read.format("delta").load(lake.table_path("events")).where("ds <= DATE'2022-04-26'")
    assert df.count() == events.count()
    assert {r["ds"] for r in df.select("ds").distinct().collect()} == set(D[:2])
    assert df.where(df["user_active_degree"].isNull() | df["video_duration"].isNull()).count() == 0


def test_samples_refuse_missing_tables_and_bad_days(spark, tmp_path):
    with pytest.raises(SamplesError, match="lfm ingest"):
        samples(spark, make_config(tmp_path), D[:1])
    with pytest.raises(BadInput):
        samples(spark, make_config(tmp_path), ["2022-04-25'; DROP"])


def test_parse_days():
    assert parse_days("2022-04-25..2022-04-27") == D[:3]
    assert parse_days("2022-04-27,2022-04-25") == [D[0], D[2]]
    with pytest.raises(BadInput):
        parse_days("2022-04-27..2022-04-25")
    with pytest.raises(BadInput):
        parse_days("yesterday")


@pytest.mark.slow
def test_pretrain_with_a_fixed_seed_gives_identical_metrics(lake, splits):
    first = pretrain(splits["train"], splits["valid"], lake, test=splits["test"], seed=3, progress=None)
    shuffled = splits["train"].take(np.random.default_rng(0).permutation(splits["train"].num_rows))
    second = pretrain(shuffled, splits["valid"], lake, test=splits["test"], seed=3, progress=None)
    for key in ("valid", "test", "history", "best_epoch"):
        assert first.metrics[key] == second.metrics[key], key
    click = {r["scenario"]: r for r in first.metrics["test"] if r["task"] == "is_click"}
    assert click["*"]["auc"] > 0.55 and click["*"]["gauc"] is not None  # it learns the planted structure
    other = pretrain(splits["train"], splits["valid"], lake, test=splits["test"], seed=4, progress=None)
    assert other.metrics["test"] != first.metrics["test"]


@pytest.mark.slow
def test_extraction_in_spark_workers_equals_the_driver(spark, lake, splits):
    result = pretrain(splits["train"], splits["valid"], lake, seed=0, progress=None)
    card = Registry(lake).register(result.model, result.encoders, result.metrics)
    model_dir = str(Registry(lake).path(card.model_version))
    s = lake.schema
    extractor = Extractor(model_dir, threads=1)

    def ur_udf(batches):
        for b in batches:
            yield pa.RecordBatch.from_arrays([b.column(s.user_key), vectors_to_arrow(extractor.user_vectors(b))],
                                             names=[s.user_key, "ur"])

    def cr_udf(batches):
        for b in batches:
            yield pa.RecordBatch.from_arrays([b.column("rid"), vectors_to_arrow(extractor.cross_vectors(b, "dnn1"))],
                                             names=["rid", "cr"])

    users = spark.read.format("delta").load(lake.table_path("users")).repartition(2)
    got = users.mapInArrow(ur_udf, f"{s.user_key} int, ur array<float>").toArrow().sort_by(s.user_key)
    driver_users = users.toArrow().sort_by(s.user_key)
    expected = Extractor(model_dir).user_vectors(driver_users)
    worker = np.asarray(got.column("ur").to_pylist(), dtype=np.float32)
    assert worker.shape == (driver_users.num_rows, card.ur_dim)
    np.testing.assert_array_equal(worker, expected)

    from pyspark.sql import functions as F

    test = samples(spark, lake, D[3:]).withColumn("rid", F.monotonically_increasing_id()).repartition(2)
    test = test.localCheckpoint()
    got = test.mapInArrow(cr_udf, "rid long, cr array<float>").toArrow().sort_by("rid")
    driver_rows = test.toArrow().sort_by("rid")
    worker = np.asarray(got.column("cr").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(worker, Extractor(model_dir).cross_vectors(driver_rows, "dnn1"))


@pytest.mark.slow
def test_cli_pretrain_then_models_list_and_show(lake, tmp_path, capsys):
    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump({"lakehouse": str(lake.resolve(lake.lakehouse)),
                                    "registry": {"path": str(tmp_path / "reg")}, "model": SMALL,
                                    "train": {**TRAIN, "max_epochs": 1}}))
    assert main(["--config", str(conf), "pretrain", "--train", "2022-04-25..2022-04-26", "--valid", "2022-04-27",
                 "--test", "2022-04-28", "--seed", "1", "--embedding", "stem"]) == 0
    out = capsys.readouterr().out
    assert "registered" in out and "is_click" in out
    version = Registry(make_config(tmp_path, registry={"path": str(tmp_path / "reg")})).latest().model_version
    assert main(["--config", str(conf), "models", "list"]) == 0
    assert version in capsys.readouterr().out
    assert main(["--config", str(conf), "models", "show", version]) == 0
    shown = capsys.readouterr().out
    assert "stem" in shown and "CR points" in shown
    assert main(["--config", str(conf), "models", "show", "0" * 16]) == 2
    assert "not in the registry" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_continues_a_model_on_later_days_and_records_its_lineage(lake, tmp_path, capsys):
    """`lfm pretrain --continue V` on days after V's: the new version names V as its parent and every day seen;
    a day V has seen is refused, naming the last day seen."""
    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump({"lakehouse": str(lake.resolve(lake.lakehouse)),
                                    "registry": {"path": str(tmp_path / "reg")}, "model": SMALL,
                                    "train": {**TRAIN, "max_epochs": 1}}))
    reg = Registry(make_config(tmp_path, registry={"path": str(tmp_path / "reg")}))
    assert main(["--config", str(conf), "pretrain", "--train", str(D[0]), "--valid", str(D[1])]) == 0
    base = reg.latest()
    assert base.lineage.parent is None and base.lineage.seen_days == (D[0], D[1])
    assert main(["--config", str(conf), "pretrain", "--continue", base.model_version, "--train", str(D[2]),
                 "--valid", str(D[3])]) == 0
    out = capsys.readouterr().out
    child = reg.latest()
    assert child.model_version != base.model_version and f"continued {base.model_version}" in out
    assert child.lineage.parent == base.model_version and child.lineage.seen_days == tuple(D)
    assert child.lineage.vocab_growth["user_id"] == len(reg.load(child.model_version).encoders.user[0].vocab) - len(
        reg.load(base.model_version).encoders.user[0].vocab)
    assert main(["--config", str(conf), "models", "show", child.model_version]) == 0
    assert f"lineage: parent {base.model_version}, seen 4 day(s) through {D[3]}" in capsys.readouterr().out
    assert main(["--config", str(conf), "pretrain", "--continue", child.model_version, "--train", str(D[3]),
                 "--valid", str(D[3])]) == 2
    assert f"has seen days through {D[3]}; continue it on later days" in capsys.readouterr().err

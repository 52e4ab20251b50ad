"""The quality gate on real Spark, Delta and Great Expectations.

One lakehouse per module: the synthetic KuaiRand-layout source is ingested (events, users, items), then healthy
embedding partitions are written for 2022-04-25 and 04-26. Healthy vectors are a Gaussian random walk per entity
(base + the sum of small daily steps), so consecutive days are close (cosine ~0.99) and a snapshot from weeks
earlier is far, plus one large offset shared by every entity, as in trained exports (on KuaiRand every UR lies
within a few degrees of the mean direction); the gate measures drift and collapse on centred vectors, which the
shuffled-keys and stale faults need. Each planted fault gets a day of its own (its D-1 written healthy beside
it) and must be caught by the expectation meant for it, named in the result and in `gate_status`.
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import yaml

from lfm.contract import PARTITION_BY, ExportSpec
from tests.support.config import make_config

V = "a1b2c3d4e5f6"
OTHER = "0f0e0d0c0b0a"
DIMS = {"ur": 32, "ir": 32, "cr_user": 16, "cr_item": 16}
EXPORT = ExportSpec(V, cr_layer="dnn_0", ur_dim=32, ir_dim=32, cr_dim=16, tau_hours=72.0, normalisation="layernorm",
                    state_ttl_days=None, schema_hash="0" * 16)
SEEDS = {"ur": 1, "ir": 2, "cr_user": 3, "cr_item": 4}
ORIGIN = dt.date(2022, 3, 27)  # day 0 of the random walk: the "weeks-old snapshot" of the stale fault
D0, D1 = dt.date(2022, 4, 25), dt.date(2022, 4, 26)
STEP = 0.45  # daily step of the walk (base has unit variance): consecutive-day cosine ~0.99
OFFSET = 100.0  # norm of the shared offset, ~6x the spread of the entities around it
SCHEMA = {
    "ur": "user_id int, ur array<float>, model_version string, export_id string, ds date, event_timestamp timestamp",
    "ir": "video_id int, ir array<float>, model_version string, export_id string, ds date, event_timestamp timestamp",
    "cr_user": "user_id int, cr_user array<float>, cr_layer string, model_version string, export_id string, ds date, "
               "event_timestamp timestamp",
    "cr_item": "video_id int, cr_item array<float>, cr_layer string, model_version string, export_id string, ds date, "
               "event_timestamp timestamp",
}

pytestmark = pytest.mark.slow  # every test here runs Spark jobs and GE validations (seconds each)


@lru_cache(maxsize=None)
def _walk(n: int, dim: int, seed: int) -> np.ndarray:
    """Positions of n entities on each of 100 days from ORIGIN: shape (100, n, dim)."""
    rng = np.random.default_rng([seed, n, dim])
    base = rng.normal(size=(n, dim))
    return base + np.cumsum(rng.normal(scale=STEP, size=(100, n, dim)), axis=0) + _offset(dim, seed)


def _offset(dim: int, seed: int) -> np.ndarray:
    direction = np.random.default_rng([seed, dim, 99]).normal(size=dim)
    return OFFSET * direction / np.linalg.norm(direction)


def healthy(table: str, n: int, day: dt.date) -> np.ndarray:
    return _walk(n, DIMS[table], SEEDS[table])[(day - ORIGIN).days].copy()


def end_of_day(day: dt.date) -> dt.datetime:
    from lfm.contract import day_end

    return day_end(day, "Asia/Shanghai")


def rows(table: str, keys, vectors, day: dt.date, version: str = V, ts: dt.datetime | None = None) -> list[tuple]:
    ts = ts or end_of_day(day)
    layer = ("dnn_0",) if table.startswith("cr_") else ()
    return [(int(k), None if v is None else [float(x) for x in v], *layer, version, EXPORT.id, day, ts)
            for k, v in zip(keys, vectors)]


def write(spark, cfg, table: str, data: list[tuple], days: list[dt.date]) -> None:
    """Replace the `days` partitions of the export in `table` with `data` in one Delta commit."""
    from lakehouse.delta_io import replace_partitions

    replace_partitions(spark.createDataFrame(data, SCHEMA[table]), cfg.table_path(table), days, {"job": "test"},
                       extra_predicate=f"export_id = '{EXPORT.id}'", partition_by=PARTITION_BY)


class Lake:
    def __init__(self, spark, cfg, users: list[int], items: list[int]) -> None:
        self.spark, self.cfg, self.users, self.items = spark, cfg, users, items

    def keys(self, table: str) -> list[int]:
        return self.users if table in ("ur", "cr_user") else self.items

    def healthy_rows(self, table: str, day: dt.date) -> list[tuple]:
        keys = self.keys(table)
        return rows(table, keys, healthy(table, len(keys), day), day)

    def gate(self, day: dt.date, tables=("ur",), **kw):
        """The gate over the tables' current versions, as if a refresh had just written them (its candidate)."""
        from lakehouse.delta_io import table_version
        from validation.gate import run_gate

        versions = {t: table_version(self.spark, self.cfg.table_path(t)) for t in tables if t in DIMS}
        previous = {t: v for t, v in versions.items()}  # D-1 was written in the same commit (see `write`)
        return run_gate(self.spark, self.cfg, day, EXPORT, versions, list(tables), previous_versions=previous, **kw)


@pytest.fixture(scope="module")
def lake(spark, synth_source, tmp_path_factory) -> Lake:
    from spark_jobs.ingest import ingest

    cfg = make_config(tmp_path_factory.mktemp("quality"))
    ingest(spark, cfg, synth_source)
    users = sorted(r[0] for r in spark.read.format("delta").load(cfg.table_path("users")).select("user_id").collect())
    items = sorted(r[0] for r in spark.read.format("delta").load(cfg.table_path("items")).select("video_id").collect())
    lk = Lake(spark, cfg, users, items)
    for table in DIMS:
        write(spark, cfg, table, lk.healthy_rows(table, D0) + lk.healthy_rows(table, D1), [D0, D1])
    return lk


@pytest.fixture(scope="module")
def healthy_run(lake):
    return lake.gate(D1, tables=("events", "users", "items", "ur", "ir", "cr_user", "cr_item"))


def test_healthy_day_passes_every_table(healthy_run):
    assert healthy_run.passed, healthy_run.summary()
    assert set(healthy_run.tables) == {"events", "users", "items", "ur", "ir", "cr_user", "cr_item"}
    assert healthy_run.tables["ur"].rows == 300 and healthy_run.tables["events"].rows > 1000
    ur = healthy_run.tables["ur"].metrics
    assert ur["coverage"] == 1.0 and ur["drift_pairs"] == ur["rows"] == 300
    assert ur["drift_mean_cosine"] > 0.95 and ur["drift_moved_share"] == 0.0
    assert ur["effective_rank"] > 20 and ur["information_abundance"] > 10
    assert not any(t.not_applicable for t in healthy_run.tables.values()) and "not applicable" not in \
        healthy_run.summary()  # a day with events makes every check


def test_tables_measured_at_once_agree_with_one_at_a_time_and_tag_their_own_jobs(lake):
    """`quality.concurrent_tables`: the tables' Spark side in threads gives the verdicts and metrics of one table at
    a time, and each table's jobs run under its own job group (what `bench/gate_time.py` counts per table)."""
    from validation.gate import job_group

    tracker = lake.spark.sparkContext.statusTracker()
    tables = ("ur", "ir")
    # A first run loads the Delta snapshots the gate reads (jobs of their own, under the group of the thread that
    # gets there first): the counted runs below then both find them loaded, whatever ran before this test.
    lake.gate(D1, tables=tables)
    runs, jobs = {}, {}
    for n in (1, 2):
        cfg = lake.cfg.model_copy(update={"quality": lake.cfg.quality.model_copy(update={"concurrent_tables": n})})
        before = {t: set(tracker.getJobIdsForGroup(job_group(D1, t))) for t in tables}
        runs[n] = Lake(lake.spark, cfg, lake.users, lake.items).gate(D1, tables=tables)
        jobs[n] = {t: len(set(tracker.getJobIdsForGroup(job_group(D1, t))) - before[t]) for t in tables}
    assert runs[1].passed and runs[2].passed, runs[2].summary()
    for table in tables:
        one, two = runs[1].tables[table].metrics, runs[2].tables[table].metrics
        assert one.keys() == two.keys() and one["rows"] > 0
        assert all(two[k] == pytest.approx(v, rel=1e-9) if v is not None else two[k] is None
                   for k, v in one.items()), (table, one, two)
    assert jobs[1] == jobs[2] and min(jobs[2].values()) > 0, jobs


def test_the_days_event_keys_are_read_once_per_key_shared_and_released(lake):
    """`metrics.DayKeys`: one cached frame of the day's distinct event keys per key column (UR and CR(u) share the
    users), holding what delta-rs reads from the events table itself, and nothing left cached afterwards."""
    from deltalake import DeltaTable

    from validation.metrics import DayKeys

    events = DeltaTable(lake.cfg.table_path("events")).to_pandas(partitions=[("ds", "=", str(D1))])
    keys = DayKeys(lake.spark, lake.cfg, D1)
    users, items = keys.of("user_id"), keys.of("video_id")
    assert keys.of("user_id") is users and users.is_cached and items.is_cached
    assert sorted(r["user_id"] for r in users.collect()) == sorted(events["user_id"].unique().tolist())
    assert items.count() == events["video_id"].nunique() > 0
    keys.release()
    assert not users.is_cached and not items.is_cached


def test_reports_are_written_under_the_lakehouse(lake, healthy_run):
    from matplotlib.image import imread

    root = Path(lake.cfg.lakehouse) / "_quality"
    index = healthy_run.docs_index
    assert index.is_relative_to(root) and index.stat().st_size > 5_000
    assert "cr_item_schema" in index.read_text()
    pages = list((index.parent / "validations" / "ur").glob(f"{D1}_{healthy_run.run_id}/*/*.html"))
    assert len(pages) == 1 and pages[0].stat().st_size > 20_000
    html = pages[0].read_text()
    assert "no NaN, infinite or null value in any vector" in html and "one row per user_id and model_version" in html
    png = healthy_run.report_png
    assert png.is_relative_to(root) and png.stat().st_size > 30_000
    image = imread(png)
    assert image.shape[0] > 600 and image.shape[1] > 600 and image[..., :3].std() > 0.05  # four rows drawn


def _nan(lake, day):
    v = healthy("ur", len(lake.users), day)
    v[:5, 3] = np.nan
    v[5, 0] = np.inf
    return rows("ur", lake.users, v, day)


def _wrong_dim(lake, day):
    v = list(healthy("ur", len(lake.users), day))
    v[:7] = [x[:31] for x in v[:7]]
    return rows("ur", lake.users, v, day)


def _rank_one(lake, day):
    """Every vector on one line through the shared offset: a collapsed tower."""
    rng = np.random.default_rng(1)
    direction = rng.normal(size=32)
    line = rng.uniform(-2.0, 2.0, size=(len(lake.users), 1)) * direction
    return rows("ur", lake.users, _offset(32, SEEDS["ur"]) + line, day)


def _duplicate_keys(lake, day):
    data = lake.healthy_rows("ur", day)
    return data + data[:10]


def _empty(lake, day):
    return []


def _wrong_ds(lake, day):
    """The refresh of D-1 written under ds = D (an off-by-one in the day it was given)."""
    yesterday = day - dt.timedelta(days=1)
    return rows("ur", lake.users, healthy("ur", len(lake.users), yesterday), day, ts=end_of_day(yesterday))


def _wrong_timestamp(lake, day):
    """event_timestamp at D 00:00 UTC instead of D+1 00:00 in the schema's zone."""
    midnight = dt.datetime.combine(day, dt.time(0), tzinfo=dt.timezone.utc)
    return rows("ur", lake.users, healthy("ur", len(lake.users), day), day, ts=midnight)


def _two_versions(lake, day):
    return lake.healthy_rows("ur", day) + rows("ur", lake.users[:50], healthy("ur", 50, day), day, version=OTHER)


def _random(lake, day):
    return rows("ur", lake.users, np.random.default_rng(2).normal(size=(len(lake.users), 32)) * 3, day)


def _shuffled(lake, day):
    """The day's vectors attached to the wrong keys (a join or ordering bug): uncentred cosines stay ~0.99."""
    v = healthy("ur", len(lake.users), day)
    return rows("ur", lake.users, v[np.random.default_rng(3).permutation(len(v))], day)


def _stale(lake, day):
    """Another day's vectors: the snapshot of the walk's first day, weeks before D."""
    return rows("ur", lake.users, healthy("ur", len(lake.users), ORIGIN), day)


def _zero_vectors(lake, day):
    v = healthy("ur", len(lake.users), day)
    v[:15] = 0.0
    return rows("ur", lake.users, v, day)


def _exploded(lake, day):
    v = healthy("ur", len(lake.users), day)
    v[:4] *= 1e3
    return rows("ur", lake.users, v, day)


FINITE = "vector_finite(ur)"
DIM_WIDTH = "vector_width(ur)"
NORM = "vector_norm(ur)"
ZERO_SHARE = "zero_share(ur)"
UNIQUE = "unique(user_id,model_version)"
END_OF_DAY = "in_set(event_timestamp)"
ONE_VERSION = "in_set(model_version)"
ROWS = "row_count"
COLLAPSE = {"expect_effective_rank_to_be_above", "expect_information_abundance_to_be_above"}
DRIFT = {"expect_drift_mean_cosine_to_be_between", "expect_drift_moved_share_to_be_below"}

FAULTS = [  # (fault, day, the expectations that must fail, whether nothing else may fail)
    (_nan, "2022-05-01", {FINITE}, True),
    (_wrong_dim, "2022-05-03", {DIM_WIDTH}, True),
    (_rank_one, "2022-05-05", COLLAPSE, False),  # drift fails as well: the day's vectors no longer resemble D-1's
    (_duplicate_keys, "2022-05-07", {UNIQUE}, True),
    (_empty, "2022-05-09", {ROWS}, True),
    (_wrong_ds, "2022-05-11", {END_OF_DAY}, True),  # ds is D, but the rows are stamped with the end of D-1
    (_wrong_timestamp, "2022-05-13", {END_OF_DAY}, True),
    (_two_versions, "2022-05-15", {ONE_VERSION}, True),
    (_random, "2022-05-17", DRIFT, True),
    (_stale, "2022-05-19", DRIFT, True),
    (_shuffled, "2022-05-25", DRIFT, True),
    (_zero_vectors, "2022-05-21", {ZERO_SHARE}, True),
    (_exploded, "2022-05-23", {NORM}, True),
]


@pytest.mark.parametrize("fault,day,expected,exact", FAULTS, ids=[f[0].__name__.strip("_") for f in FAULTS])
def test_planted_fault_is_caught_by_its_expectation(lake, fault, day, expected, exact):
    from validation.status import status_rows, verdicts

    day = dt.date.fromisoformat(day)
    yesterday = day - dt.timedelta(days=1)
    write(lake.spark, lake.cfg, "ur", lake.healthy_rows("ur", yesterday) + fault(lake, day), [yesterday, day])
    result = lake.gate(day)
    failed = set(result.tables["ur"].failed)
    assert not result.passed and result.quarantined == ("ur",)
    assert expected <= failed if not exact else failed == expected, result.summary()
    assert not verdicts(lake.cfg, day, EXPORT.id)["ur"].passed
    (row,) = status_rows(lake.cfg, [day], V)
    assert not row.passed and set(row.failed_expectations) == failed and row.run_id == result.run_id


def _collapsed(lake, day):
    """Every vector identical: centred, each has norm 0 (the DIVIDE_BY_ZERO of the drift cosine, once)."""
    return rows("ur", lake.users, np.repeat(healthy("ur", 1, day), len(lake.users), axis=0), day)


def _constant(lake, day):
    return rows("ur", lake.users, np.ones((len(lake.users), 32)), day)


def _all_nan(lake, day):
    return rows("ur", lake.users, np.full((len(lake.users), 32), np.nan), day)


def _all_zero(lake, day):
    return rows("ur", lake.users, np.zeros((len(lake.users), 32)), day)


def _single_row(lake, day):
    return rows("ur", lake.users[:1], healthy("ur", len(lake.users), day)[:1], day)


def _healthy(lake, day):
    return lake.healthy_rows("ur", day)


DEGENERATE = [  # (partition of D, D-1 healthy?, the expectations that fail (exactly), metrics that must hold)
    (_collapsed, True, COLLAPSE, {"effective_rank": 0.0, "information_abundance": 0.0, "drift_pairs": 0.0,
                                  "drift_mean_cosine": None, "valid_rows": 300.0}),
    (_constant, True, COLLAPSE, {"effective_rank": 0.0, "drift_pairs": 0.0, "drift_moved_share": None}),
    (_all_nan, True, {FINITE}, {"valid_rows": 0.0, "effective_rank": None, "drift_mean_cosine": None}),
    (_all_zero, True, {ZERO_SHARE}, {"valid_rows": 0.0, "sample_rows": 0.0, "information_abundance": None}),
    (_single_row, True, set(), {"rows": 1.0, "sample_rows": 0.0, "effective_rank": None, "drift_pairs": 1.0}),
    (_empty, True, {ROWS}, {"rows": 0.0, "effective_rank": None, "drift_mean_cosine": None}),
    (_healthy, False, set(),  # D-1's partition is empty: drift does not apply
     {"drift_pairs": 0.0, "drift_mean_cosine": None, "drift_moved_share": None, "rows": 300.0}),
]


@pytest.mark.parametrize("partition,with_yesterday,expected,values", DEGENERATE,
                         ids=["collapsed", "constant", "all_nan", "all_zero", "single_row", "empty", "empty_d_minus_1"])
def test_degenerate_partition_is_a_verdict_not_a_crash(lake, partition, with_yesterday, expected, values):
    """Planted in Delta and gated end to end (June: no events, so coverage does not apply and is reported so, never
    as passed): every metric is a number or None, the verdict is recorded, and a bad day is quarantined by the
    expectation meant for it, whatever else does not apply."""
    from validation.status import not_applicable, status_rows

    day = dt.date(2022, 6, 3 + 2 * [d[0] for d in DEGENERATE].index(partition))
    yesterday = day - dt.timedelta(days=1)
    before = lake.healthy_rows("ur", yesterday) if with_yesterday else []
    write(lake.spark, lake.cfg, "ur", before + partition(lake, day), [yesterday, day])
    result = lake.gate(day)
    table = result.tables["ur"]
    assert set(table.failed) == expected, result.summary()
    assert table.passed == (not expected) and "gate_error" not in table.failed
    assert {k: table.metrics[k] for k in values} == values
    assert table.metrics["active"] == 0 and table.metrics["coverage"] is None and table.not_applicable == ("coverage",)
    assert f"not applicable, {day} had no events: coverage (ur); every other check applied" in result.summary()
    (row,) = status_rows(lake.cfg, [day], V)
    assert row.passed == table.passed and set(row.failed_expectations) == expected and row.error is None
    assert not_applicable(row.metrics) == ("coverage",)  # the verdict's own record says so


def _gate_ur(lake, day, version, previous_version=None):
    """The gate on `ur` of `day` at Delta `version`, drift against D-1 at `previous_version` (None: no release)."""
    from validation.gate import run_gate

    return run_gate(lake.spark, lake.cfg, day, EXPORT, {"ur": version}, ["ur"],
                    previous_versions=None if previous_version is None else {"ur": previous_version})


def test_versions_pin_what_is_validated_and_what_drift_compares_to(lake):
    from lakehouse.delta_io import table_version

    day = dt.date(2022, 6, 21)
    yesterday = day - dt.timedelta(days=1)
    path = lake.cfg.table_path("ur")
    write(lake.spark, lake.cfg, "ur", lake.healthy_rows("ur", yesterday) + lake.healthy_rows("ur", day),
          [yesterday, day])
    healthy_version = table_version(lake.spark, path)
    write(lake.spark, lake.cfg, "ur", _nan(lake, day), [day])  # D rewritten behind the candidate's back
    write(lake.spark, lake.cfg, "ur", _random(lake, yesterday), [yesterday])  # and D-1 too
    latest = table_version(lake.spark, path)
    assert set(_gate_ur(lake, day, latest, latest).tables["ur"].failed) == {FINITE} | DRIFT  # the latest D and D-1
    assert set(_gate_ur(lake, day, healthy_version, latest).tables["ur"].failed) == DRIFT  # D as written
    both = _gate_ur(lake, day, healthy_version, healthy_version).tables["ur"]
    assert both.passed and both.metrics["drift_mean_cosine"] > 0.95
    alone = _gate_ur(lake, day, healthy_version).tables["ur"]  # no release of D-1: drift does not apply
    assert alone.passed and alone.metrics["drift_pairs"] == 0 and alone.metrics["drift_mean_cosine"] is None


def test_an_error_inside_the_gate_quarantines_the_table(lake):
    """Fail closed: a version that does not exist (e.g. vacuumed) is a failed verdict naming the error."""
    from validation.status import verdicts

    day = dt.date(2022, 6, 23)
    result = _gate_ur(lake, day, 10_000)
    table = result.tables["ur"]
    assert not result.passed and set(table.failed) == {"gate_error"}
    assert "10000" in table.details["gate_error"], table.details
    verdict = verdicts(lake.cfg, day, EXPORT.id)["ur"]
    assert not verdict.passed and verdict.table_version == 10_000 and "10000" in verdict.error


def test_missing_coverage_is_caught(lake):
    day = dt.date(2022, 4, 27)  # a day with events; ur holds only every other user
    half = lake.users[::2]
    write(lake.spark, lake.cfg, "ur", rows("ur", half, healthy("ur", len(lake.users), day)[::2], day), [day])
    result = lake.gate(day)
    assert set(result.tables["ur"].failed) == {"expect_coverage_to_be_above"}, result.summary()
    assert 0.3 < result.tables["ur"].metrics["coverage"] < 0.7


def test_latest_run_decides_and_a_verdict_names_the_version_it_checked(lake, healthy_run):
    from lakehouse.delta_io import table_version
    from validation.status import verdicts

    day = dt.date(2022, 5, 27)
    yesterday = day - dt.timedelta(days=1)
    assert verdicts(lake.cfg, day, EXPORT.id) == {}  # never validated: no verdict, nothing can be released
    write(lake.spark, lake.cfg, "ur", lake.healthy_rows("ur", yesterday) + _nan(lake, day), [yesterday, day])
    bad_version = table_version(lake.spark, lake.cfg.table_path("ur"))
    assert not lake.gate(day).passed
    assert not verdicts(lake.cfg, day, EXPORT.id)["ur"].passed
    write(lake.spark, lake.cfg, "ur", lake.healthy_rows("ur", day), [day])  # the fixed rerun
    assert lake.gate(day).passed
    fixed = verdicts(lake.cfg, day, EXPORT.id)["ur"]
    assert fixed.passed and fixed.table_version == bad_version + 1 and fixed.export_id == EXPORT.id
    assert {t for t, v in verdicts(lake.cfg, D1, EXPORT.id).items() if v.passed} == {"ur", "ir", "cr_user", "cr_item"}


def test_gate_failure_stops_a_caller(lake):
    from validation.errors import QualityGateFailed

    result = lake.gate(dt.date(2022, 6, 1))  # no ur rows on that day
    with pytest.raises(QualityGateFailed, match=ROWS):
        result.raise_if_failed()


def test_cli_validate_and_status(lake, healthy_run, tmp_path, capsys):
    from cli.main import main
    from tests.support.cli import cli

    day = dt.date(2022, 5, 29)
    yesterday = day - dt.timedelta(days=1)
    write(lake.spark, lake.cfg, "ur", lake.healthy_rows("ur", yesterday) + _nan(lake, day), [yesterday, day])
    lake.gate(day)
    config = tmp_path / "lfm.yaml"
    config.write_text(yaml.safe_dump({"lakehouse": lake.cfg.lakehouse}))
    assert main(["--config", str(config), "validate", "--ds", str(D1), "--table", "events", "--table", "users",
                 "--table", "items"]) == 0
    assert "3 passed, 0 quarantined" in capsys.readouterr().out
    assert main(["--config", str(config), "validate", "--ds", str(day)]) == 2  # no refresh wrote that day
    assert "no complete refresh of 2022-05-29" in capsys.readouterr().err
    assert main(["--config", str(config), "status", "--ds", str(day), str(D1)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(f"{day}  ur" in x and f"QUARANTINED {FINITE} (coverage not applicable: no events on the day)" in x
               for x in lines), out  # no events on that day: coverage is said not to apply, the NaN still fails
    assert sum("2022-04-26" in x and "passed" in x for x in lines) == 7, out
    bad = cli("--config", str(config), "validate", "--ds", "2022-13-01")  # argparse refuses it: exit 2, no trace
    assert bad.code == 2 and "2022-13-01" in bad.err and "Traceback" not in bad.err, bad.err

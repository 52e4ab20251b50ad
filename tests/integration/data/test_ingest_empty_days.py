"""A log with a day nobody acted on (no event, no file): ingest writes a day inside the log's span as an empty day
and records it in `ingest_log`; a day after the log's last event is refused as not landed yet, nothing written,
unless `--allow-empty` (`lfm ingest`, `lfm run-daily`); the refresh's plan and run-daily's ingest step take a
recorded empty day (the plan never as a chain's first day) and refuse a day without rows that no ingest recorded.
The witnesses are delta-rs reads of `events` and `ingest_log`."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from lakehouse import ingests
from lfm.config import LfmConfig, config_from_dict
from spark_jobs.ingest import IngestError, ingest
from spark_jobs.refresh import NoEvents
from spark_jobs.refresh.plan import empty_day
from tests.support.cli import cli
from tests.support.shop import ShopSpec, days, shop_config, write_shop

SPEC = ShopSpec(users=30, items=12, days=3, events_per_day=200, seed=5, empty_days=(1,))
D = days(SPEC.days)
AFTER = D[-1] + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> tuple[LfmConfig, Path, Path]:
    """(the config, its lfm.yaml, the raw folder): the shop's log ingested whole, its gap D[1] an empty day."""
    root = tmp_path_factory.mktemp("empty_days")
    write_shop(root / "raw", SPEC)
    assert not (root / "raw" / "events" / f"ratings_{D[1]:%Y%m%d}.csv").exists()  # nobody acted: no file that day
    conf = root / "lfm.yaml"
    conf.write_text(yaml.safe_dump(shop_config(root, root / "raw")))
    cfg = config_from_dict(shop_config(root, root / "raw"), "<test>", str(root))
    result = ingest(spark, cfg, run_id="all")
    assert (result.days, result.empty_days, result.days_found) == (D, [D[1]], [D[0], D[2]])
    return cfg, conf, root / "raw"


def _log(cfg: LfmConfig) -> dict[dt.date, int]:
    """ingest_log as delta-rs reads it: the newest rows per day."""
    rows = sorted(DeltaTable(cfg.table_path("ingest_log")).to_pyarrow_table().to_pylist(), key=lambda r: r["at"])
    return {r["ds"]: r["rows"] for r in rows}


def _events_per_day(cfg: LfmConfig) -> dict[dt.date, int]:
    table = DeltaTable(cfg.table_path("events")).to_pyarrow_table(columns=["ds"])
    return {d: n for d, n in zip(*table.group_by("ds").aggregate([("ds", "count")]).to_pydict().values())}


def test_a_day_inside_the_log_is_ingested_as_an_empty_day(spark, lake):
    from lfm.errors import LfmError
    from pipeline.daily import daily_steps
    from pipeline.steps import DayContext

    cfg, _, _ = lake
    assert _events_per_day(cfg) == {D[0]: 200, D[2]: 200}
    assert {d: n for d, n in _log(cfg).items() if d in D} == {D[0]: 200, D[1]: 0, D[2]: 200}
    version = DeltaTable(cfg.table_path("events")).version()
    assert ingests.recorded_empty(cfg, D[1], version) and not ingests.recorded_empty(cfg, D[0], version)

    # The refresh's plan: the recorded empty day is taken; it cannot begin a chain; a day no ingest wrote is refused.
    assert empty_day(cfg, D[1], 0, version, cold_start=False)
    assert not empty_day(cfg, D[0], 200, version, cold_start=False)
    with pytest.raises(NoEvents, match=f"{D[1]} had no events .* a CR chain cannot begin on it"):
        empty_day(cfg, D[1], 0, version, cold_start=True)
    with pytest.raises(NoEvents, match=f"no events for ds {AFTER} .* no ingest recorded it"):
        empty_day(cfg, AFTER, 0, version, cold_start=False)
    # run-daily's ingest step without --source: the recorded empty day is in (0 rows), a day never ingested is not.
    ingest_step = daily_steps()[0]
    assert ingest_step.run(DayContext(cfg, D[1], spark_factory=lambda: spark)) == 0
    with pytest.raises(LfmError, match=f"no events ingested for ds {AFTER} and no raw folder given"):
        ingest_step.run(DayContext(cfg, AFTER, spark_factory=lambda: spark))


def test_a_day_after_the_log_is_refused_unless_allowed(spark, lake):
    cfg, conf, raw = lake
    version, log = DeltaTable(cfg.table_path("events")).version(), _log(cfg)
    with pytest.raises(IngestError, match=f"no events for ds {AFTER} in the source: its log ends at {D[2]}, so "
                                          "these events have not landed yet; nothing was written.*--allow-empty"):
        ingest(spark, cfg, days=[AFTER])
    assert DeltaTable(cfg.table_path("events")).version() == version and _log(cfg) == log
    assert not ingests.recorded_empty(cfg, AFTER)

    # The user says the day had none: `lfm ingest --allow-empty`, and `lfm run-daily --allow-empty`, whose ingest
    # step records its day (the refresh then needs a model this lakehouse has none of).
    later = AFTER + dt.timedelta(days=1)
    allowed = cli("--config", str(conf), "ingest", "--ds", str(AFTER), "--allow-empty")
    assert allowed.code == 0 and f"of which 1 with no events (empty days): {AFTER}" in allowed.out, allowed.err
    run = cli("--config", str(conf), "run-daily", "--ds", str(later), "--source", str(raw), "--allow-empty")
    assert f"{later} ingest      done: 0 rows" in run.out and f"step 'refresh' of {later} failed" in run.err, run.err
    assert DeltaTable(cfg.table_path("events")).version() == version  # nothing to add or remove: no commit there
    assert _log(cfg) == {**log, AFTER: 0, later: 0} and ingests.recorded_empty(cfg, later, version)

"""`lfm run-daily` and `lfm status` end to end on real Spark, Delta, GE, Feast and Redis (no mocks).

One chain of CLI calls over one small lakehouse (the refresh tests' world: synthetic inputs, a tiny registered
LFM), each call's outcome recorded by the module fixture and checked by the tests below:
1. D1 without --cold-start: refresh stops (no state of D-1) and the command says to pass --cold-start;
2. D1..D2 --cold-start with Redis stopped, started twice at once (two threads, the API under the CLI): one
   run takes the day, the other fails at once naming it; the first resumes D1 at refresh, passes the gate, and
   materialize fails (clear error, step recorded failed), so D2 is not started;
3. the same command once Redis is back: D1 resumes at materialize only; D2 is refreshed but its UR is
   quarantined (this config demands that UR moves from day to day; a frozen model over static user features
   repeats it exactly), so it never reaches the online store, which keeps D1's vectors;
4. D1 again: nothing to do.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from lfm.config import LfmConfig
from tests.support.cli import Cli, cli

pytestmark = pytest.mark.slow

D1, D2 = dt.date(2022, 4, 27), dt.date(2022, 4, 28)
# The tiny model's 8-d CR layer has an effective rank near 2 (the collapse bounds are tuned for 64-d trained
# exports), so they are relaxed; UR must change daily, which fails D2 on purpose (drift does not apply to D1,
# whose D-1 has no export).
QUALITY = {"vectors": {"min_effective_rank": 1.0, "min_information_abundance": 1.0},
           "tables": {"ur": {"max_mean_cosine": 0.99}}}


def write_config(root: Path, registry: Path, redis_connection: str, **extra) -> Path:
    path = root / "lfm.yaml"
    path.write_text(yaml.safe_dump({
        "lakehouse": str(root / "lakehouse"), "registry": {"path": str(registry)}, "quality": QUALITY,
        "feast": {"repo_path": str(root / "feature_repo"), "online_store": "redis",
                  "redis_connection": redis_connection}, **extra}))
    return path


def attempts(spark, cfg) -> dict[tuple[dt.date, str], list[str]]:
    """Every attempt in `runs`, oldest first: (ds, step) -> [status, ...]."""
    rows = spark.read.format("delta").load(cfg.table_path("runs")).orderBy("ended_at").collect()
    out: dict[tuple[dt.date, str], list[str]] = {}
    for r in rows:
        out.setdefault((r["ds"], r["step"]), []).append(r["status"])
    return out


@dataclass
class Raced:
    """One of two concurrent `run_days` calls: what it returned or raised, and when."""

    outcome: object
    seconds: float


def twice_at_once(call: Callable[[], object]) -> list[Raced]:
    start, out = threading.Barrier(2), []

    def run() -> None:
        start.wait()
        t0 = time.perf_counter()
        try:
            result = call()
        except Exception as err:  # noqa: BLE001 - the outcome is what the tests check
            result = err
        out.append(Raced(result, time.perf_counter() - t0))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    return out


@dataclass
class Chain:
    """Each call's outcome, and the `runs` attempts after the calls that change them."""

    cfg: LfmConfig
    model: str
    first: Cli
    down: list[Raced]
    down_port: int
    back: Cli
    again: Cli
    status: Cli
    after_down: dict = field(default_factory=dict)
    after_back: dict = field(default_factory=dict)
    after_again: dict = field(default_factory=dict)
    down_errors: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def chain(spark, world) -> Iterator[Chain]:
    from lfm.config import load_config
    from pipeline import runs
    from pipeline.daily import run_days
    from tests.support.redis_local import NoRedis, start_redis

    world.config("daily")  # a lakehouse holding copies of the ingested inputs
    root = world.root / "daily"
    try:
        gone = start_redis()
    except NoRedis as err:
        pytest.skip(f"run-daily with Redis not tested: {err}")
    gone.stop()  # nothing listens on its port any more: "Redis stopped"
    conf = write_config(root, world.registry, gone.connection)
    cfg = load_config(conf)
    first = cli("--config", str(conf), "run-daily", "--ds", str(D1), "--model", world.model_a)
    down = twice_at_once(lambda: run_days(cfg, [D1, D2], lambda: spark, model_version=world.model_a,
                                          cold_start=True))
    after_down = attempts(spark, cfg)
    down_errors = {s: r.error for s, r in runs.latest_by_step(cfg, D1).items()}
    server = start_redis()  # Redis is back (on a new port; the config follows it)
    try:
        conf = write_config(root, world.registry, server.connection)
        cfg = load_config(conf)
        back = cli("-v", "--log-json", "--config", str(conf), "run-daily", "--ds", f"{D1}..{D2}", "--model",
                   world.model_a, "--cold-start")
        after_back = attempts(spark, cfg)
        again = cli("--config", str(conf), "run-daily", "--ds", str(D1), "--model", world.model_a)
        after_again = attempts(spark, cfg)
        status = cli("--config", str(conf), "status", "--days", "3")
        yield Chain(cfg, world.model_a, first, down, gone.port, back, again, status, after_down, after_back,
                    after_again, down_errors)
    finally:
        server.stop()


def test_first_day_without_cold_start_says_to_pass_it(chain):
    assert chain.first.code == 2
    assert "looks like the first day of a chain" in chain.first.err
    assert f"lfm run-daily --ds {D1} --cold-start" in chain.first.err
    # ingest ran and stands; the failed refresh is recorded, and the next command resumed there
    assert chain.after_down[(D1, "ingest")] == ["succeeded"]
    assert chain.after_down[(D1, "refresh")] == ["failed", "succeeded"]


def test_second_run_of_a_running_day_fails_at_once_and_the_day_stays_whole(spark, chain):
    from pipeline.daily import DailyFailed
    from lakehouse.locks import DayBusy

    busy = [r for r in chain.down if isinstance(r.outcome, DayBusy)]
    ran = [r for r in chain.down if isinstance(r.outcome, DailyFailed)]
    assert len(busy) == 1 and len(ran) == 1, chain.down
    assert f"daily of {D1} is already running (pid " in str(busy[0].outcome)
    assert busy[0].seconds < ran[0].seconds / 4  # refused before any work, not after a conflicting write
    # the loser recorded nothing and wrote nothing: one attempt per step, the day once in every table
    assert chain.after_down[(D1, "refresh")] == ["failed", "succeeded"]  # the failure is step 1's (no state)
    for table, key in (("ur", "user_id"), ("ir", "video_id"), ("cr_user", "user_id"), ("cr_item", "video_id"),
                       ("cr_user_state", "user_id")):
        rows = spark.read.format("delta").load(chain.cfg.table_path(table)).where(f"ds = DATE'{D1}'").collect()
        assert rows and len({r[key] for r in rows}) == len(rows), table
        assert {r["model_version"] for r in rows} == {chain.model}
    log = spark.read.format("delta").load(chain.cfg.table_path("refresh_log")).where(f"ds = DATE'{D1}'").count()
    assert log == 1


def test_online_store_down_fails_materialize_and_the_rerun_resumes_there(chain):
    from pipeline.daily import DailyFailed

    err = str(next(r.outcome for r in chain.down if isinstance(r.outcome, DailyFailed)))
    assert f"online store (redis 127.0.0.1:{chain.down_port}) is unreachable" in err
    assert "step 'materialize' of 2022-04-27 failed" in err and "rerun the same command" in err
    assert chain.after_down[(D1, "validate")] == ["succeeded"]
    assert chain.after_down[(D1, "publish")] == ["succeeded"]
    assert chain.after_down[(D1, "materialize")] == ["failed"]
    assert "OnlineStoreDown" in chain.down_errors["materialize"]
    assert not any(ds == D2 for ds, _ in chain.after_down)  # a range stops at the failed day
    # once Redis is back, the same command redoes only materialize for D1
    for step in ("ingest", "refresh", "validate", "publish"):
        assert chain.after_back[(D1, step)] == chain.after_down[(D1, step)]
    assert chain.after_back[(D1, "materialize")] == ["failed", "succeeded"]


def test_validation_failure_keeps_the_previous_snapshot_online(spark, chain):
    from serving.online import OnlineReader

    assert chain.back.code == 2 and "step 'validate' of 2022-04-28 failed" in chain.back.err
    assert "ur: quarantined: expect_drift_mean_cosine" in chain.back.err
    assert "keep the previous release" in chain.back.err  # the hint
    assert chain.after_back[(D2, "refresh")] == ["succeeded"]
    assert chain.after_back[(D2, "validate")] == ["failed"]
    assert (D2, "publish") not in chain.after_back and (D2, "materialize") not in chain.after_back

    def delta(day: dt.date) -> dict[int, np.ndarray]:
        rows = (spark.read.format("delta").load(chain.cfg.table_path("cr_user"))
                .where(f"ds = DATE'{day}' AND model_version = '{chain.model}'").select("user_id", "cr_user").collect())
        return {r[0]: np.asarray(r[1], dtype=np.float32) for r in rows}

    day1, day2 = delta(D1), delta(D2)
    changed = [u for u in day1 if u in day2 and not np.array_equal(day1[u], day2[u])]
    only_day2 = sorted(set(day2) - set(day1))
    assert changed and only_day2  # D2 is in Delta and differs from D1
    reader = OnlineReader(chain.cfg, chain.model)
    try:
        users = sorted(day1) + only_day2
        got = reader.user_vectors(users, ("cr_user",))
    finally:
        reader.close()
    found = got.found["cr_user"]
    assert found[: len(day1)].all() and not found[len(day1):].any()
    np.testing.assert_array_equal(got.vectors["cr_user"][: len(day1)], np.stack([day1[u] for u in sorted(day1)]))


def test_finished_day_is_not_rerun(chain):
    assert chain.again.code == 0 and "already complete" in chain.again.out
    assert chain.after_again == chain.after_back


def test_status_shows_steps_rows_errors_and_gate_verdicts(chain):
    assert chain.status.code == 0
    lines = chain.status.out.splitlines()

    def line(prefix: str) -> str:
        hits = [x for x in lines if x.startswith(prefix)]
        assert len(hits) == 1, (prefix, chain.status.out)
        return hits[0]

    refresh = line(f"{D1}  refresh     succeeded").split()
    assert int(refresh[3].replace(",", "")) > 0 and float(refresh[4]) > 0 and float(refresh[5].replace(",", "")) > 0
    line(f"{D1}  materialize succeeded")
    failed = lines.index(line(f"{D2}  validate    failed"))
    assert lines[failed + 1].strip().startswith("error: QualityGateFailed")
    assert "QUARANTINED expect_drift_mean_cosine" in line(f"{D2}  ur ")
    assert " passed " in line(f"{D1}  ur ") and " passed " in line(f"{D1}  cr_user ")
    # one story per day, from its records: what the plain rerun would do next
    assert line(f"{D1}  export ").endswith("gate passed, RELEASED, online, complete")
    d2 = line(f"{D2}  export ")
    assert "QUARANTINED " in d2 and " ur, " in d2
    assert d2.endswith("not released, not online, next: run-daily resumes at validate")


def test_each_step_is_one_line_on_screen_and_the_log_is_in_its_file(chain):
    """Without -v the screen has one line per step and no log record; the records are in `data/logs/lfm.log`
    beside the config (with -v on the screen too: `back` below)."""
    def lines(run: Cli, day: dt.date, step: str) -> list[str]:
        return [x for x in run.out.splitlines() if x.startswith(f"  {day} {step} ")]

    assert len(lines(chain.first, D1, "ingest")) == 1 and " done: " in lines(chain.first, D1, "ingest")[0]
    assert len(lines(chain.first, D1, "refresh")) == 1 and " FAILED after " in lines(chain.first, D1, "refresh")[0]
    assert "step=" not in chain.first.out + chain.first.err and " INFO " not in chain.first.err
    log = (chain.cfg.log_dir() / "lfm.log").read_text()
    assert chain.cfg.log_dir() == Path(chain.cfg.base_dir) / "data" / "logs"  # beside the config, not in the lake
    assert f"ds={D1} step=ingest status=succeeded" in log and f"ds={D1} step=refresh status=failed" in log
    assert "lfm run-daily failed: step 'refresh' of 2022-04-27 failed" in log
    for step in ("ingest", "refresh", "withdraw", "validate"):  # -v: each step's line once, its records as well
        assert len(lines(chain.back, D2, step)) == 1, chain.back.out
    assert any(x.get("step") == "refresh" and x.get("status") == "succeeded" for x in chain.back.json_logs)


def test_logs_are_structured_and_carry_the_run_id(spark, chain):
    from pipeline import runs

    run_id = runs.latest_by_step(chain.cfg, D2)["validate"].run_id
    logs = [x for x in chain.back.json_logs if x.get("run_id") == run_id]
    steps = {(x.get("step"), x.get("status")) for x in logs if x["logger"] == "lfm.steps"}
    assert {("ingest", "succeeded"), ("refresh", "succeeded"), ("validate", "failed")} <= steps
    assert all(x.get("ds") == str(D2) for x in logs)

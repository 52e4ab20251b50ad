"""Storage faults end in one message naming the table, the version and the fix (real Spark, Delta, Feast, sqlite).

One small lakehouse with D1 released and materialized through `run-daily`; then each fault is made the way it
happens to an operator: the `releases` folder deleted (shutil), its newest `_delta_log` commit torn, a released
version's files removed by a real `VACUUM` (retention check off) after a plain Delta rewrite, a released file
truncated or overwritten with same-size garbage, and a refresh whose rollback fails for real (the files its
restore reads are gone). Each is checked through the `lfm` verbs a user runs, against evidence read around the
platform (delta-rs straight from the tables, the file system), and each fault is undone after its test.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tests.support.cli import Cli, cli
from tests.support.releases import Lake, newest_release, partition, released_lake, tamper, training_rows
from tests.support.worlds import D1, D2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lake(spark, world) -> Lake:
    return released_lake(spark, world, "storage_faults", [D1])


def _refused(result: Cli, *needles: str) -> str:
    """The verb failed with one clean message (exit 2, no JVM or Python trace) holding every needle."""
    assert result.code == 2, (result.code, result.out, result.err)
    assert "Traceback" not in result.err and "Py4JJavaError" not in result.err, result.err
    for needle in needles:
        assert needle in result.err, (needle, result.err)
    return result.err


def _entities(lake: Lake, tmp_path: Path) -> str:
    """Entity rows at noon of D2: their natural snapshot is D1's release."""
    d1 = partition(lake.cfg, "ur", D1, lake.export_id)
    users = sorted(int(u) for u in d1["user_id"])[:20]
    items = sorted(int(i) for i in partition(lake.cfg, "ir", D1, lake.export_id)["video_id"])[:20]
    path = tmp_path / "entities.parquet"
    training_rows(lake.cfg, D2, users, items).to_parquet(path)
    return str(path)


def _released_files(lake: Lake, table: str) -> tuple[int, list[Path]]:
    """The version of `table` D1's release names and that version's files of D1 (from the log, via delta-rs)."""
    version = newest_release(lake.cfg, D1, lake.export_id)["table_versions"][table]
    log = DeltaTable(lake.cfg.table_path(table), version=version)
    actions = pa.table(log.get_add_actions(flatten=True)).to_pylist()
    files = [Path(lake.cfg.table_path(table), a["path"]) for a in actions
             if str(a["partition.ds"]) == str(D1) and a["partition.export_id"] == lake.export_id]
    assert files
    return version, files


def test_a_deleted_releases_table_stops_status_run_daily_and_every_reader(lake, tmp_path):
    """Not "releases: none yet", not "nothing to do", not "run lfm materialize": the table and the fix."""
    path = Path(lake.cfg.table_path("releases"))
    shutil.copytree(path, tmp_path / "releases")
    shutil.rmtree(path)
    try:
        for argv in (["status"], ["run-daily", "--ds", str(D1), "--model", lake.model],
                     ["materialize", "--ds", str(D1)], ["retrieve", "--user", "1", "--k", "5"],
                     ["training-set", "--entities", _entities(lake, tmp_path), "--out", str(tmp_path / "ts"),
                      "--model", lake.model]):
            _refused(lake.lfm(*argv), f"record table releases is missing: {path} was written",
                     "restore the folder from a backup", "lfm validate --ds D")
        assert not path.exists()  # no verb started a new, empty history
    finally:
        shutil.copytree(tmp_path / "releases", path)
    assert lake.lfm("status").code == 0


def test_a_torn_newest_releases_commit_names_the_table_the_commit_and_the_fix(lake, tmp_path):
    log = Path(lake.cfg.table_path("releases"), "_delta_log")
    newest = sorted(log.glob("*.json"))[-1]
    shutil.copy2(newest, tmp_path / newest.name)
    newest.write_text(newest.read_text()[:40])  # a write cut short: half a JSON line
    try:
        for argv in (["status"], ["materialize", "--ds", str(D1)]):
            _refused(lake.lfm(*argv), f"record table releases ({log.parent}) cannot be read: commit {newest.name} "
                     "of its _delta_log does not parse", f"restore {log.parent} from a backup",
                     f"move {newest.name} out of", "lfm validate --ds D")
    finally:
        shutil.copy2(tmp_path / newest.name, newest)


def test_a_vacuumed_release_is_refused_naming_table_version_and_fix_and_the_rerun_recovers(spark, lake, tmp_path):
    """A plain Delta rewrite of D1's UR, then a real VACUUM with the retention check off: the release still names
    the old version, whose files are gone. Materialize and training sets refuse it; the fix they name works."""
    version, files = _released_files(lake, "ur")
    entities = _entities(lake, tmp_path)
    tamper(lake.cfg, "ur", D1, lake.export_id, lambda v: v * 2)
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM delta.`{lake.cfg.table_path('ur')}` RETAIN 0 HOURS")
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    assert not any(f.exists() for f in files)
    fix = f"`lfm refresh --ds {D1}` (or `lfm run-daily --ds {D1} --force`)"
    for argv in (["materialize", "--ds", str(D1)],
                 ["training-set", "--entities", entities, "--out", str(tmp_path / "ts"), "--model", lake.model]):
        _refused(lake.lfm(*argv), f"table ur version {version} cannot be read: its file", f"(day {D1} of export "
                 f"{lake.export_id}) is gone", fix, "never VACUUM these tables below their retention")
    assert not (tmp_path / "ts").exists()
    assert lake.lfm("refresh", "--ds", str(D1), "--model", lake.model, "--cold-start").code == 0
    assert newest_release(lake.cfg, D1, lake.export_id)["table_versions"]["ur"] > version
    assert lake.lfm("materialize", "--ds", str(D1)).code == 0


def test_a_truncated_released_file_is_refused_before_spark_reads_it(lake, tmp_path, redis_server):
    """Training sets and a Redis materialize (whose Spark tasks read the release) refuse it alike."""
    import yaml

    conf = yaml.safe_load(lake.conf.read_text())
    conf["feast"] = {"repo_path": str(tmp_path / "repo"), "online_store": "redis",
                     "redis_connection": redis_server.connection}
    redis_conf = tmp_path / "redis.yaml"
    redis_conf.write_text(yaml.safe_dump(conf))
    assert cli("--config", str(redis_conf), "register").code == 0
    version, files = _released_files(lake, "ir")
    entities, saved = _entities(lake, tmp_path), files[0].read_bytes()
    with files[0].open("r+b") as fh:
        fh.truncate(len(saved) // 2)
    try:
        for run in (lake.lfm("training-set", "--entities", entities, "--out", str(tmp_path / "ts"), "--model",
                             lake.model),
                    cli("--config", str(redis_conf), "materialize", "--ds", str(D1))):
            _refused(run, f"table ir version {version} cannot be read: its file {files[0]}",
                     f"has {len(saved) // 2} bytes where its commit logged {len(saved)}", f"lfm refresh --ds {D1}")
    finally:
        files[0].write_bytes(saved)


def test_a_damaged_file_of_its_logged_size_is_translated_where_spark_reads_it(lake, tmp_path):
    """Garbage of the logged size passes the file check; Spark's lazy read error (at collection) is translated."""
    version, files = _released_files(lake, "cr_user")
    entities, saved = _entities(lake, tmp_path), files[0].read_bytes()
    files[0].write_bytes(b"\0" * len(saved))
    try:
        for argv in (["materialize", "--ds", str(D1)],
                     ["training-set", "--entities", entities, "--out", str(tmp_path / "ts"), "--model", lake.model]):
            _refused(lake.lfm(*argv), f"table cr_user version {version} cannot be read: its file {files[0]}",
                     "cannot be read (", f"lfm refresh --ds {D1}")
    finally:
        files[0].write_bytes(saved)


def test_a_failed_rollback_names_the_tables_and_versions_holding_the_failed_run(spark, world):
    """D1 refreshed twice: before the second run, the UR files its rollback would restore are deleted and the
    cr_item_state partition folder is replaced by a file (a write fails there, even as root). The error says the
    rollback failed and which version holds the failed run's rows, instead of "restored"."""
    from lfm.errors import RollbackFailed
    from tests.support.worlds import refresh

    cfg = world.config("storage_rollback")
    first = refresh(spark, cfg, D1, world.model_a, cold_start=True, run_id="first-run")
    export = first.spec.id
    ur = Path(cfg.table_path("ur"))
    for f in (ur / f"ds={D1}" / f"export_id={export}").glob("*.parquet"):
        f.unlink()
    state_day = Path(cfg.table_path("cr_item_state"), f"ds={D1}", f"export_id={export}")
    shutil.rmtree(state_day)
    state_day.write_text("not a folder")
    with pytest.raises(RollbackFailed) as err:
        refresh(spark, cfg, D1, world.model_a, cold_start=True, run_id="failed-run")
    message = str(err.value)
    latest = DeltaTable(str(ur))
    assert latest.history(1)[0]["userMetadata"].count('"run_id": "failed-run"') == 1  # the failed run's rows
    assert f"writing ['cr_item_state'] for ds {D1} failed" in message and "rolling back failed too" in message
    assert f"ur at version {latest.version()} (restore failed:" in message and "restored" not in message
    assert f"`lfm refresh --ds {D1}` (or `lfm run-daily --ds {D1}`)" in message and "Nothing was published" in message
    for table in ("ir", "cr_user", "cr_item"):  # their restores succeeded: they are back, and not named
        assert '"job": "refresh-rollback"' in DeltaTable(cfg.table_path(table)).history(1)[0]["userMetadata"]
        assert f"{table} at version" not in message
    recorded = DeltaTable(cfg.table_path("refresh_log")).to_pyarrow_table().column("run_id").to_pylist()
    assert recorded == ["first-run"]

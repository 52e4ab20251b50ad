"""Record tables that were deleted or damaged stop their readers and writers with the table and the fix; a
lakehouse that never wrote one reads it as empty (real delta-rs tables on disk, damaged with plain file tools)."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse.records import rows, write_record
from lfm.errors import RecordTableCorrupt, RecordTableMissing

SCHEMA = pa.schema([("ds", pa.date32()), ("n", pa.int64())])


def _append(path: Path, n: int) -> None:
    write_record(str(path), [{"ds": dt.date(2022, 5, 1), "n": n}], SCHEMA, {"n": n})


def test_a_table_never_written_reads_empty_even_beside_other_record_tables(tmp_path):
    """Candidates without verdicts or releases is a real state (`--no-gate`, every day quarantined): not a loss."""
    lake = tmp_path / "lakehouse"
    assert rows(str(lake / "releases")) == []
    _append(lake / "refresh_log", 0)
    assert rows(str(lake / "releases")) == [] and rows(str(lake / "gate_status")) == []
    assert [r["n"] for r in rows(str(lake / "refresh_log"))] == [0]


def test_a_deleted_record_table_stops_every_reader_and_writer_until_restored_or_acknowledged(tmp_path):
    lake = tmp_path / "lakehouse"
    releases, runs = lake / "releases", lake / "runs"
    for n in range(2):
        _append(releases, n)
    _append(runs, 0)
    shutil.rmtree(releases)
    for read in (lambda: rows(str(releases)), lambda: rows(str(runs)), lambda: _append(runs, 1),
                 lambda: _append(releases, 2)):
        with pytest.raises(RecordTableMissing) as err:
            read()
        message = str(err.value)
        assert "record table releases is missing" in message and str(releases) in message
        assert "restore the folder from a backup" in message and "lfm validate --ds D" in message
    assert not releases.exists()  # the refused append did not start a new, empty history
    assert len(DeltaTable(str(runs)).history()) == 1
    (lake / "_records" / "releases").unlink()  # the fix without a backup: acknowledge the loss
    assert rows(str(releases)) == [] and [r["n"] for r in rows(str(runs))] == [0]


def test_a_table_written_before_the_markers_is_marked_when_read(tmp_path):
    """A lakehouse older than the markers: its first read marks the table, so a later deletion is caught."""
    path = tmp_path / "lakehouse" / "gate_status"
    write_deltalake(str(path), pa.Table.from_pylist([{"ds": dt.date(2022, 5, 1), "n": 0}], SCHEMA))
    assert not (tmp_path / "lakehouse" / "_records").exists()
    assert len(rows(str(path))) == 1
    shutil.rmtree(path)
    with pytest.raises(RecordTableMissing, match="record table gate_status is missing.*lfm validate --ds D"):
        rows(str(path))


def test_a_damaged_newest_commit_names_the_table_the_commit_and_the_fix(tmp_path):
    path = tmp_path / "lakehouse" / "releases"
    for n in range(3):
        _append(path, n)
    newest = path / "_delta_log" / "00000000000000000002.json"
    newest.write_text('{"commitInfo": {"timestamp": 1')  # a torn write: half a JSON line
    for use in (lambda: rows(str(path)), lambda: _append(path, 3)):
        with pytest.raises(RecordTableCorrupt) as err:
            use()
        message = str(err.value)
        assert (f"record table releases ({path}) cannot be read: commit 00000000000000000002.json of its _delta_log "
                "does not parse") in message
        assert "restore" in message and "move 00000000000000000002.json out of" in message
        assert "lfm validate --ds D" in message
    newest.rename(tmp_path / "aside.json")  # the fix the message gives: only the newest append is lost
    assert sorted(r["n"] for r in rows(str(path))) == [0, 1]


def test_a_lost_data_file_of_a_record_table_names_the_table(tmp_path):
    path = tmp_path / "lakehouse" / "refresh_log"
    for n in range(2):
        _append(path, n)
    lost = next(path.glob("*.parquet"))
    lost.unlink()
    with pytest.raises(RecordTableCorrupt) as err:
        rows(str(path))
    message = str(err.value)
    assert message.startswith(f"record table refresh_log ({path}) cannot be read: data file {lost.name} is gone. "
                              "It is the source of truth") and f"restore {path} from a backup" in message

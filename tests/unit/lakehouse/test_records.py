"""The record tables through delta-rs: what is appended reads back, and a process that read them exits cleanly."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pyarrow as pa

from lakehouse.records import newest, rows, write_record
from tests.support.config import REPO

SCHEMA = pa.schema([("ds", pa.date32()), ("name", pa.string()), ("n", pa.int64()),
                    ("versions", pa.map_(pa.string(), pa.int64())), ("at", pa.timestamp("us", tz="UTC"))])


def _append(path: str, n: int) -> None:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=n)
    write_record(path, [{"ds": dt.date(2022, 5, 1), "name": "ur", "n": n, "versions": {"ur": n}, "at": at}], SCHEMA,
                 {"n": n})


def test_appended_records_read_back_and_the_newest_per_key_wins(tmp_path):
    path = str(tmp_path / "records")
    assert rows(path) == []
    for n in range(3):
        _append(path, n)
    got = rows(path)
    assert sorted(r["n"] for r in got) == [0, 1, 2]
    assert all(isinstance(r["versions"], dict) and r["versions"] == {"ur": r["n"]} for r in got)
    assert all(r["ds"] == dt.date(2022, 5, 1) and r["at"].tzinfo is not None for r in got)
    (latest,) = newest(got, lambda r: (r["ds"], r["name"]), "at")
    assert latest["n"] == 2


def test_a_process_that_read_records_exits_with_status_0(tmp_path):
    """Reading through a pyarrow dataset over delta-rs's Python file system used to abort about every other
    process at exit (SIGABRT after the work was done: `lfm status` returned -6); ten clean exits in a row."""
    path = str(tmp_path / "records")
    for n in range(3):
        _append(path, n)
    code = f"from lakehouse.records import rows\nfor _ in range(3): rows({path!r})\n"
    codes = [subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True).returncode
             for _ in range(10)]
    assert codes == [0] * 10, codes

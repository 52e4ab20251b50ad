"""Validation of names and dates before they reach a path or a SQL predicate."""
from __future__ import annotations

import datetime as dt
import re

from lfm.errors import LfmError

# Every check is a `fullmatch`: `$` would also accept a trailing newline ("abc\n"), which then reaches a path or SQL.
_TABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_DS = re.compile(r"\d{4}-\d{2}-\d{2}")
MODEL_VERSION = re.compile(r"[0-9a-f]{12,64}")
_EXPORT_ID = re.compile(r"[0-9a-f]{16}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BadInput(LfmError, ValueError):
    """Input that the platform refuses; the message names the value and what is expected."""


def check_table_name(name: str) -> str:
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise BadInput(f"bad table name {name!r}: use lower-case letters, digits and '_' (e.g. 'events')")
    return name


def parse_ds(value: str | dt.date) -> dt.date:
    """A partition date `YYYY-MM-DD`; anything else (including injection-shaped strings) is refused."""
    if isinstance(value, dt.datetime):
        raise BadInput(f"bad date {value!r}: pass a day as YYYY-MM-DD, not a timestamp")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _DS.fullmatch(value):
        raise BadInput(f"bad date {value!r}: expected YYYY-MM-DD, e.g. 2022-05-02")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadInput(f"bad date {value!r}: not a calendar day (expected YYYY-MM-DD)") from None


def ds_range(first: str | dt.date, last: str | dt.date) -> list[dt.date]:
    a, b = parse_ds(first), parse_ds(last)
    if b < a:
        raise BadInput(f"bad date range {a}..{b}: --from must not be after --to")
    return [a + dt.timedelta(days=i) for i in range((b - a).days + 1)]


def parse_days(value: str) -> list[dt.date]:
    """`2022-04-25..2022-05-01` (inclusive range) or `2022-04-25,2022-04-27` (list)."""
    value = (value or "").strip()
    if ".." in value:
        first, _, last = value.partition("..")
        return ds_range(first.strip(), last.strip())
    days = sorted({parse_ds(v.strip()) for v in value.split(",") if v.strip()})
    if not days:
        raise BadInput(f"bad days {value!r}: expected FIRST..LAST or a comma list of YYYY-MM-DD")
    return days


def check_model_version(value: str) -> str:
    if not isinstance(value, str) or not MODEL_VERSION.fullmatch(value):
        raise BadInput(f"bad model version {value!r}: expected a hex content hash (see `lfm models list`)")
    return value


def check_export_id(value: str) -> str:
    """An export spec's id (`lfm.contract.ExportSpec.id`): 16 hex characters."""
    if not isinstance(value, str) or not _EXPORT_ID.fullmatch(value):
        raise BadInput(f"bad export id {value!r}: expected 16 hex characters (see `lfm status`)")
    return value


def check_run_id(value: str) -> str:
    """A run id ends up in folder names (gate reports) and commit metadata: letters, digits, '-', '_' only."""
    if not isinstance(value, str) or not _RUN_ID.fullmatch(value):
        raise BadInput(f"bad run id {value!r}: use 1-64 letters, digits, '-' or '_'")
    return value

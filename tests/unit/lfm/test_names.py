"""Dates, versions and table names are parsed before they reach a path or a SQL predicate."""
from __future__ import annotations

import datetime as dt

import pytest

from lfm.names import BadInput, check_model_version, check_table_name, ds_range, parse_ds
from lakehouse.delta_io import ds_predicate

INJECTIONS = ["2022-05-01' OR '1'='1", "2022-05-01; DROP TABLE ur", "../../etc/passwd", "2022-13-01", "20220501", ""]


@pytest.mark.parametrize("value", INJECTIONS)
def test_bad_dates_are_refused(value):
    with pytest.raises(BadInput, match="bad date"):
        parse_ds(value)


def test_good_dates_and_ranges():
    assert parse_ds("2022-05-02") == dt.date(2022, 5, 2)
    assert ds_range("2022-04-30", "2022-05-02") == [dt.date(2022, 4, 30), dt.date(2022, 5, 1), dt.date(2022, 5, 2)]
    with pytest.raises(BadInput, match="must not be after"):
        ds_range("2022-05-02", "2022-05-01")
    assert ds_predicate([dt.date(2022, 5, 2)]) == "ds IN (DATE'2022-05-02')"


@pytest.mark.parametrize("name", ["../ur", "ur; DROP", "UR", "", "a/b"])
def test_bad_table_names(name):
    with pytest.raises(BadInput, match="bad table name"):
        check_table_name(name)


@pytest.mark.parametrize("version", ["abc' OR 1=1", "../x", "XYZ", ""])
def test_bad_model_versions(version):
    with pytest.raises(BadInput, match="bad model version"):
        check_model_version(version)

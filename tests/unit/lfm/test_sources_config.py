"""`sources:` in lfm.yaml: KuaiRand's release layout is the default declaration, a declaration is checked against
the data schema before any data is read, and every problem names the config key to change (no Spark)."""
from __future__ import annotations

import pytest

from tests.support.shop import SCHEMA, SOURCES
from tests.support.config import make_config
from lfm.config import ConfigError, config_from_dict
from lfm.config.sources import ColumnType, SourceFormat, TimeUnit, default_sources, mapping_problems


def test_default_is_the_kuairand_release_layout(tmp_path):
    cfg = make_config(tmp_path)
    src = cfg.sources
    assert src.events.path == "log_standard_*.csv" and src.events.exact_columns
    assert src.events.time_unit == TimeUnit.ms and src.events.date_format == "yyyyMMdd"
    assert src.events.columns["time_ms"].type == ColumnType.bigint and src.events.columns["tab"].type == ColumnType.int
    assert len(src.users.columns) == 31 and len(src.item_statistics.columns) == 52
    assert mapping_problems(cfg.schema, src) == []
    # Only a root: still KuaiRand, read from that folder.
    rooted = make_config(tmp_path, sources={"root": "../shared/data/kuairand-pure"})
    assert rooted.sources.root and rooted.sources.events == default_sources().events


def test_a_declaration_replaces_the_default_whole(tmp_path):
    cfg = make_config(tmp_path, schema=SCHEMA, sources=SOURCES)
    assert mapping_problems(cfg.schema, cfg.sources) == []
    assert cfg.sources.users.format == SourceFormat.parquet and cfg.sources.items.format == SourceFormat.json
    assert cfg.sources.events.columns["member_id"].raw == "member"  # {raw, type} and `name: type` both read
    assert cfg.sources.events.columns["dwell_s"].type == ColumnType.double
    without_stats = {k: v for k, v in SOURCES.items() if k != "item_statistics"}
    assert make_config(tmp_path, schema=SCHEMA, sources=without_stats).sources.item_statistics is None
    with pytest.raises(ConfigError, match="sources.users: Field required"):
        make_config(tmp_path, sources={"events": SOURCES["events"], "items": SOURCES["items"]})


@pytest.mark.parametrize("sources, named", [
    ({"events": {"path": "x", "columns": {"ds": "date"}}}, "sources.events.columns"),
    ({"events": {"path": "x", "columns": {"a b": "int"}}}, "sources.events.columns"),
    ({"events": {"path": "x", "columns": {"a": "float64"}}}, "sources.events.columns.a.type"),
    ({"events": {"path": "x", "format": "xlsx", "columns": {"a": "int"}}}, "sources.events.format"),
    ({"events": {"path": "x", "time_unit": "minutes", "columns": {"a": "int"}}}, "sources.events.time_unit"),
    ({"events": {"path": "x", "columns": {"a": {"raw": "b"}, "b": "int"}}}, "raw columns mapped twice"),
    ({"events": {"path": "x", "csv": {"delimiter": "\\t"}, "columns": {"a": "int"}}},
     "sources.events.csv.delimiter: Value error, must be one character"),
    ({"events": {"path": "x", "csv": {"delimiter": "'", "quote": "'"}, "columns": {"a": "int"}}},
     "csv.delimiter and csv.quote must differ"),
    ({"events": {"path": "x", "format": "parquet", "csv": {"header": False}, "columns": {"a": "int"}}},
     "`csv:` options apply to format csv, not parquet"),
])
def test_bad_declarations_name_the_key(tmp_path, sources, named):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"sources": sources}, "<test>", str(tmp_path))
    assert named in str(err.value)


def _problems(tmp_path, schema=None, **changes) -> str:
    sources = {k: dict(v) for k, v in SOURCES.items()}
    for path, value in changes.items():
        role, column = path.split("__")
        columns = dict(sources[role]["columns"])
        if value is None:
            columns.pop(column)
        else:
            columns[column] = value
        sources[role]["columns"] = columns
    cfg = make_config(tmp_path, schema={**SCHEMA, **(schema or {})}, sources=sources)
    return "; ".join(mapping_problems(cfg.schema, cfg.sources))


def test_mapping_problems_name_the_config_key_and_the_fix(tmp_path):
    assert "schema.scenario 'surface' is not a column of sources.events: add it to sources.events.columns" in \
        _problems(tmp_path, events__surface=None)
    assert "sources.events.columns.surface.type: the schema.scenario must be int or bigint or string, not double" \
        in _problems(tmp_path, events__surface={"raw": "page", "type": "double"})
    assert "sources.events.columns.click.type: the task (schema.tasks) must be" in \
        _problems(tmp_path, events__click={"raw": "clicked", "type": "date"})
    assert "sources.events.columns.ts.type: the schema.timestamp (time_unit s) must be int or bigint or double" in \
        _problems(tmp_path, events__ts={"raw": "event_ts", "type": "string"})
    assert "sources.items.columns.price.type: schema.item_fields declares 'price' numeric" in \
        _problems(tmp_path, items__price="string")
    assert "schema.user_fields 'country' is not a column of sources.users or sources.events" in \
        _problems(tmp_path, users__country=None)
    assert "key 'member_id' is declared with different types" in \
        _problems(tmp_path, users__member_id={"raw": "uid", "type": "bigint"})
    assert "schema.date 'day' is not a column of sources.events" in _problems(tmp_path, schema={"date": "day"})
    assert "both declare ['views_7d']" in _problems(tmp_path, items__views_7d="int")


def test_a_numeric_event_time_needs_its_unit_said(tmp_path):
    """Epoch numbers do not say their unit: no default (KuaiRand's ms would read seconds as 1970); a column
    declared `timestamp` needs none."""
    events = {k: v for k, v in SOURCES["events"].items() if k != "time_unit"}
    unsaid = make_config(tmp_path, schema=SCHEMA, sources={**SOURCES, "events": events})
    assert unsaid.sources.events.time_unit is None
    assert mapping_problems(unsaid.schema, unsaid.sources) == [
        "sources.events.time_unit is not set: the event time 'ts' (schema.timestamp) is declared bigint, so say its "
        "unit: s, ms or us (epoch seconds, milliseconds, microseconds)"]
    typed = {**events, "columns": {**events["columns"], "ts": {"raw": "event_ts", "type": "timestamp"}}}
    cfg = make_config(tmp_path, schema=SCHEMA, sources={**SOURCES, "events": typed})
    assert mapping_problems(cfg.schema, cfg.sources) == []
    assert cfg.sources.events.unit_of_time("ts") == TimeUnit.timestamp

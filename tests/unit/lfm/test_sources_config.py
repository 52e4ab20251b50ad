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
    ({"events": {"path": "x", "columns": {"a": {"expr": "rating >= (4", "type": "boolean"}}}},
     "sources.events.columns.a.expr: Value error, an unclosed '(' in 'rating >= (4'"),
    ({"events": {"path": "x", "columns": {"a": {"expr": "'all", "type": "string"}}}},
     "sources.events.columns.a.expr: Value error, an unclosed quote at character 1"),
    ({"events": {"path": "x", "columns": {"a": {"expr": "b", "raw": "c"}}}}, "give `raw:` (a column of the "
     "source) or `expr:` (an expression over its columns), not both"),
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


def test_the_key_type_follows_the_declared_key_columns_alone(tmp_path):
    """`LfmConfig.key_type` is the one home of the key type (Feast's entities, the online key bytes, every cast):
    KuaiRand's int keys are int64, the shop's string keys strings, each side on its own; an undeclared or
    text-and-number key is a clear error, and the removed `feast.entity_key_type` says where the type lives now."""
    from lfm.config import KeyType
    from tests.support.config import keyed_sources

    kuairand = make_config(tmp_path)
    assert (kuairand.key_type("user"), kuairand.key_type("item")) == (KeyType.int64, KeyType.int64)
    shop = make_config(tmp_path, schema=SCHEMA, sources=SOURCES)
    assert (shop.key_type("user"), shop.key_type("item")) == (KeyType.string, KeyType.string)
    assert KeyType.int64.spark == "bigint" and KeyType.string.spark == "string"
    mixed = make_config(tmp_path, sources=keyed_sources(user_type="bigint", item_type="string"))
    assert (mixed.key_type("user"), mixed.key_type("item")) == (KeyType.int64, KeyType.string)

    undeclared = make_config(tmp_path, schema={"user_key": "uid", "user_fields": [{"name": "uid"}]})
    with pytest.raises(ConfigError, match="schema.user_key 'uid' is not a column of sources.users: declare it"):
        undeclared.key_type("user")
    torn = make_config(tmp_path, sources={**keyed_sources(), "users": {"path": "u", "columns": {"user_id": "string"}}})
    with pytest.raises(ConfigError, match="sources.users.columns.user_id.type: string, "
                                          "sources.events.columns.user_id.type: int"):
        torn.key_type("user")

    with pytest.raises(ConfigError) as err:
        config_from_dict({"feast": {"entity_key_type": "string"}}, "lfm.yaml", str(tmp_path))
    assert ("feast.entity_key_type is no longer a setting: the key type now follows `schema`" in str(err.value)
            and "delete feast.entity_key_type" in str(err.value))


def test_derived_columns_are_declared_columns_with_an_expression(tmp_path):
    """`columns.<name>.expr`: a task or a scenario from the raw columns; typed, checked against the schema like any
    column, and the raw columns it reads found by a conservative tokenizer."""
    from lfm.config.sql_expr import references

    events = {**SOURCES["events"], "columns": {**SOURCES["events"]["columns"],
                                               "click": {"expr": "try_cast(dwell_s AS DOUBLE) >= 30",
                                                         "type": "boolean"},
                                               "surface": {"expr": "'all'"}}}
    events["columns"].pop("dwell_s")
    cfg = make_config(tmp_path, schema=SCHEMA, sources={**SOURCES, "events": events})
    src = cfg.sources.events
    assert mapping_problems(cfg.schema, cfg.sources) == []
    assert src.derived == {"click": "try_cast(dwell_s AS DOUBLE) >= 30", "surface": "'all'"}
    assert "clicked" not in src.raw_names and "dwell_s" not in src.raw_names
    assert src.expression_columns(["event_ts", "clicked", "dwell_s", "session"]) == ["dwell_s"]
    assert src.shown("click") == "derived column 'click' (= try_cast(dwell_s AS DOUBLE) >= 30)"
    assert src.shown("member_id") == "column 'member'"
    # A derived scenario of a type a scenario cannot have is named like any column.
    events["columns"]["surface"] = {"expr": "1.5", "type": "double"}
    bad = make_config(tmp_path, schema=SCHEMA, sources={**SOURCES, "events": events})
    assert "sources.events.columns.surface.type: the schema.scenario must be int or bigint or string, not double" \
        in "; ".join(mapping_problems(bad.schema, bad.sources))
    # What the tokenizer reads: functions, keywords, struct fields, lambda variables and literals are no columns.
    refs = references("CASE WHEN `page name` = 'home' AND size(tags) > 0 THEN 1 ELSE 0 END + s.x "
                      "+ aggregate(v, 0, (acc, y) -> acc + y) + 1.5e3 + date_diff(date, DATE '2024-01-01')")
    assert refs.names == {"page name", "tags", "s", "v"} and refs.maybe >= {"date", "CASE"}
    assert refs.missing(["Page Name", "TAGS", "s"]) == ["v"]  # Spark resolves names case-insensitively


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


def test_the_readmes_rating_log_example_is_the_declaration_the_end_to_end_test_runs(tmp_path):
    """README's second "Your own data" example is what tests/integration/pipeline/test_byod_pipeline.py ingests."""
    import re

    import yaml

    from tests.support.config import REPO
    from tests.support.shop import RATING_EVENTS

    text = (REPO / "README.md").read_text()
    block = re.search(r"tab-separated rating log.*?```yaml\n(.*?)```", text, re.S).group(1)
    assert yaml.safe_load(block)["events"] == RATING_EVENTS
    cfg = make_config(tmp_path, schema=SCHEMA, sources={**SOURCES, "events": RATING_EVENTS})
    assert mapping_problems(cfg.schema, cfg.sources) == []
    assert cfg.sources.events.csv.delimiter == "\t"

"""`sources.events.duplicates` in lfm.yaml: a typed policy (keep by default), settable on the KuaiRand layout
alone, and a bad value named by its key (no Spark)."""
from __future__ import annotations

import pytest

from lfm.config import ConfigError, config_from_dict, load_config
from lfm.config.kuairand import KUAIRAND_SOURCES
from lfm.config.sources import DuplicatePolicy, default_sources
from tests.support.config import REPO, make_config
from tests.support.shop import SCHEMA, SOURCES


def test_default_keeps_duplicates_in_the_shipped_config_and_a_declaration(tmp_path):
    assert load_config(REPO / "lfm.yaml").sources.events.duplicates is DuplicatePolicy.keep
    assert make_config(tmp_path, schema=SCHEMA, sources=SOURCES).sources.events.duplicates is DuplicatePolicy.keep


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_a_declared_policy_is_the_enum(tmp_path, policy):
    sources = {**SOURCES, "events": {**SOURCES["events"], "duplicates": policy.value}}
    assert make_config(tmp_path, schema=SCHEMA, sources=sources).sources.events.duplicates is policy


def test_the_policy_alone_keeps_the_kuairand_layout(tmp_path):
    src = make_config(tmp_path, sources={"root": "data", "events": {"duplicates": "drop"}}).sources
    assert src.events.duplicates is DuplicatePolicy.drop and src.root == "data"
    assert src.events.model_dump(exclude={"duplicates"}) == default_sources().events.model_dump(exclude={"duplicates"})
    assert src.users == default_sources().users and src.events.path == KUAIRAND_SOURCES["events"]["path"]


@pytest.mark.parametrize("sources, named", [
    ({"events": {"duplicates": "dedupe"}}, "sources.events.duplicates: Input should be 'keep', 'drop' or 'refuse'"),
    ({"users": {"duplicates": "drop"}}, "sources.users.duplicates: unknown key"),
])
def test_a_bad_policy_names_the_key(tmp_path, sources, named):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"sources": sources}, "<test>", str(tmp_path))
    assert named in str(err.value)

"""A lineage export through `run-daily` (real Spark, Delta, torch, Feast): the daily update continues the model on
the day before, each day is exported by the version trained through the day before, and the CR chain carries over
from one version to the next.

The world (tests.support.worlds) holds 2022-04-25..28; a base is trained on 04-25 (early stopping on 04-26), so it
has seen through 04-26. With `updates.every_days: 1`, 04-27 is made by the base (nothing to continue on yet) and
04-28 by the version continued on 04-27, which knows the user and item that appear only on 04-27.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from pipeline.daily import run_days
from pipeline.lineage import NoVersionForDay, train_version, update_days
from pipeline.spec import resolve_spec
from tests.support.worlds import NEW_ID

pytestmark = pytest.mark.slow

D0, D1, D2 = dt.date(2022, 4, 26), dt.date(2022, 4, 27), dt.date(2022, 4, 28)
# The tiny model's 8-d CR layer has an effective rank near 2 (the collapse bounds are tuned for 64-d exports), and
# one epoch on one day moves its CR activations far (its day-over-day CR drift across the update is left unbounded;
# the version drift of UR and IR is what this module checks).
MOVES = {"min_mean_cosine": -1.0, "max_moved_share": 1.0}
QUALITY = {"vectors": {"min_effective_rank": 1.0, "min_information_abundance": 1.0},
           "tables": {"cr_user": MOVES, "cr_item": MOVES}}


@pytest.fixture(scope="module")
def lineage(spark, world, tmp_path_factory):
    registry = tmp_path_factory.mktemp("lineage_registry")
    cfg = world.config("lineage_daily", registry=registry, updates={"every_days": 1}, quality=QUALITY)
    base = train_version(spark, cfg, [dt.date(2022, 4, 25)], [D0], say=None).card
    first = run_days(cfg, [D1, D2], lambda: spark, cold_start=True)
    return cfg, base, first


def _plain(cfg, table: str, version: int | None = None):
    """A table read by delta-rs alone, beside the platform's readers."""
    return DeltaTable(str(cfg.table_path(table)), version=version).to_pyarrow_table()


def _card(cfg, version: str) -> dict:
    return json.loads((Path(cfg.registry.path) / version / "card.json").read_text())


def test_each_released_day_is_made_by_a_version_that_saw_only_earlier_days(lineage):
    cfg, base, _ = lineage
    releases = _plain(cfg, "releases").to_pylist()
    made = {}
    for r in sorted(releases, key=lambda r: r["at"]):
        made[r["ds"]] = r  # the newest row per day decides
    assert set(made) == {D1, D2} and all(r["status"] == "released" for r in made.values())
    assert len({r["export_id"] for r in made.values()}) == 1  # one export: the lineage, not one per version
    for day, release in made.items():
        ur = dict(release["table_versions"])["ur"]
        rows = _plain(cfg, "ur", ur)
        rows = rows.filter(pc.and_(pc.equal(rows["ds"], day), pc.equal(rows["export_id"], release["export_id"])))
        versions = set(rows["model_version"].to_pylist())
        assert versions == {release["model_version"]}, day  # the rows readers get were made by that version
        seen = _card(cfg, release["model_version"])["content"]["lineage"]["seen_days"]
        assert max(dt.date.fromisoformat(d) for d in seen) < day, (day, seen)
    assert made[D1]["model_version"] == base.model_version
    assert made[D2]["model_version"] != base.model_version


def test_the_daily_update_continues_the_lineage_and_new_ids_get_their_own_rows(lineage):
    from models.registry import Registry

    cfg, base, _ = lineage
    cards = {c.model_version: c for c in Registry(cfg).list()}
    assert len(cards) == 2
    child = next(c for v, c in cards.items() if v != base.model_version)
    assert child.lineage.parent == base.model_version
    assert child.lineage.seen_days == (dt.date(2022, 4, 25), D0, D1)
    assert child.lineage.vocab_growth.get(cfg.schema.user_key, 0) >= 1
    def user_ids(version: str) -> list[str]:
        encoders = Registry(cfg).load(version).encoders
        return next(e for e in encoders.user if e.name == cfg.schema.user_key).vocab

    assert str(NEW_ID) not in user_ids(base.model_version)
    assert str(NEW_ID) in user_ids(child.model_version)


def test_the_cr_chain_carries_over_from_one_version_to_the_next(lineage):
    cfg, base, _ = lineage
    log = {r["ds"]: r for r in _plain(cfg, "refresh_log").to_pylist()}
    assert log[D1]["cold_start"] and not log[D2]["cold_start"]
    state = _plain(cfg, "cr_user_state")
    keys = {d: set(state.filter(pc.equal(state["ds"], d))[cfg.schema.user_key].to_pylist()) for d in (D1, D2)}
    assert keys[D1] and keys[D1] <= keys[D2]  # yesterday's users are still in today's decayed state


def test_a_finished_day_does_nothing_and_trains_nothing(spark, lineage):
    from models.registry import Registry

    cfg, _, _ = lineage
    before = len(Registry(cfg).list())
    again = run_days(cfg, [D2], lambda: spark)
    assert again[0].skipped and len(Registry(cfg).list()) == before
    assert update_days(cfg, resolve_spec(cfg), D2) == []  # the lineage is up to date for D2


def test_a_day_every_version_has_seen_is_refused(lineage):
    from models.registry import Registry
    from pipeline.lineage import day_model

    cfg, base, _ = lineage
    spec = resolve_spec(cfg, Registry(cfg).list()[-1].model_version)
    assert spec.lineage and spec.model_version == base.model_version  # keyed by the base, whichever is newest
    with pytest.raises(NoVersionForDay, match="would have learned that day's labels"):
        day_model(cfg, spec, "", D0)


def _verdicts(cfg, day: dt.date) -> dict[str, dict]:
    found = {}
    for r in sorted(_plain(cfg, "gate_status").to_pylist(), key=lambda r: r["checked_at"]):
        if r["ds"] == day and r["export_id"]:
            found[r["table"]] = r
    return found


def test_the_gate_measures_how_far_the_new_version_moved_the_same_entities(lineage, capsys):
    from cli.main import main
    from tests.support.config import write_yaml

    cfg, base, _ = lineage
    first, second = _verdicts(cfg, D1), _verdicts(cfg, D2)
    assert dict(first["ur"]["metrics"]).get("version_mean_cosine") is None  # D-1 has no release to compare with
    for table in ("ur", "ir"):
        found = dict(second[table]["metrics"])
        assert found["version_pairs"] >= 50 and 0.5 <= found["version_mean_cosine"] < 1.0, (table, found)
        assert second[table]["model_version"] != base.model_version
    assert dict(second["cr_user"]["metrics"]).get("version_mean_cosine") is None  # a decayed sum over versions
    path = write_yaml(cfg, cfg.resolve(cfg.lakehouse).parent / "lfm.yaml")
    assert main(["--config", str(path), "status", "--days", "2"]) == 0
    out = capsys.readouterr().out
    shown = [line for line in out.splitlines() if "version drift" in line]
    assert {line.split()[1] for line in shown} == {"ur", "ir"} and all(str(D2) in line for line in shown)
    updates = {u[0]: u for u in (line.split() for line in out.splitlines()) if u[1:2] == ["update"]}
    assert updates[str(D2)][2] == "succeeded" and int(updates[str(D2)][3].replace(",", "")) > 0  # rows it trained on


def test_a_version_jump_past_the_bound_is_quarantined(spark, lineage):
    """Last in the module: it leaves D2 with a quarantine verdict."""
    from lfm.config.quality import TableOverrides
    from pipeline.export import validate_day

    cfg, _, _ = lineage
    moved = dict(_verdicts(cfg, D2)["ur"]["metrics"])["version_mean_cosine"]
    bound = TableOverrides(min_version_cosine=(moved + 1.0) / 2)
    strict = cfg.model_copy(update={"quality": cfg.quality.model_copy(update={"tables": {"ur": bound}})})
    done = validate_day(spark, strict, D2)
    assert not done.gate.passed and done.release is None
    assert "expect_version_mean_cosine_to_be_above" in done.gate.tables["ur"].details
    assert done.gate.tables["ir"].passed

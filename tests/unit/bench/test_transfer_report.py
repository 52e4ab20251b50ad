"""The transfer report's cells, baselines, markdown and arguments on hand-made runs (no Spark; the study end to end is
tests/integration/downstream/test_downstream_report.py)."""
from __future__ import annotations

import datetime as dt
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.support.config import REPO

sys.path.insert(0, str(REPO))  # bench/ is a folder of scripts, not an installed package
from bench.transfer.baselines import (PriorRows, fit_prior, matching_valid_fraction,  # noqa: E402
                                      shrunk_rates)
from bench.transfer.runs import CONTROL  # noqa: E402
from bench.transfer.spec import parse_args  # noqa: E402
from bench.transfer.stats import auc  # noqa: E402
from bench.transfer.summary import Evidence, EvalRows, seed_spread, summarise, verdicts  # noqa: E402
from lfm.names import BadInput  # noqa: E402

D0 = dt.date(2022, 4, 25)


def _world(seed: int = 0, n: int = 400):
    """Test rows of one tab and runs whose scores carry a known amount of signal."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int8)
    users = rng.integers(0, 40, n).astype(np.int32)
    signal = {("none", CONTROL): 0.3, ("none_more_data", CONTROL): 0.35, ("ctr_prior", CONTROL): 0.3,
              ("ur_linear", "plain"): 0.5, ("ur_ir_cr_mlp", "plain"): 1.5, ("ur_ir_cr_mlp", "stem"): 1.5}
    records, scores = [], {}
    for (variant, option), strength in signal.items():
        lfms = {CONTROL: [None], "plain": [0, 1], "stem": [0]}[option]
        for lfm in lfms:
            for s in range(1 if variant == "ctr_prior" else 2):
                key = f"{variant}.{option}.{lfm}.{s}"
                scores[key] = (labels, labels * strength + rng.normal(size=n))
                records.append({"tab": "0", "variant": variant, "kind": variant, "option": option, "lfm_seed": lfm,
                                "seed": s, "model_version": "v", "cr_layer": "dnn1", "valid_auc": strength,
                                "epochs": 5, "converged": True, "seconds": 1.0, "scores": key})
    return EvalRows(labels, users), records, scores


def test_cells_pool_seeds_and_intervals_are_paired():
    rows, records, scores = _world()
    ev = Evidence(records, {"0": rows}, scores.__getitem__, rounds=200)
    summary = summarise(ev, ("0",))
    stem = summary[summary.option == "stem"].iloc[0]
    s = summary[summary.option != "stem"].set_index("variant")
    best = s.loc["ur_ir_cr_mlp"]
    assert best.runs == 4 and best.lfm_seeds == 2  # 2 LFM seeds x 2 downstream seeds in one cell
    mean_auc = np.mean([auc(rows.labels, scores[f"ur_ir_cr_mlp.plain.{lfm}.{s}"][1]) for lfm in (0, 1)
                        for s in (0, 1)])
    base = np.mean([auc(rows.labels, scores[f"none.{CONTROL}.None.{s}"][1]) for s in (0, 1)])
    lift = best["vs none"]
    assert lift.estimate == pytest.approx(mean_auc - base) and lift.low < lift.estimate < lift.high
    assert lift.excludes_zero and best["vs ctr_prior"].excludes_zero and best["vs none_more_data"].excludes_zero
    assert s.loc["none", "vs none"] is None  # a cell is never compared with itself
    assert s.loc["ur_linear", "vs ur_linear"] is None and best["vs ur_linear"].estimate > 0
    assert 0.5 < best.gauc <= 1.0
    # another LFM option is compared with the plain LFM's same variant; no plain cell compares with itself
    assert stem.runs == 2 and not stem["vs plain LFM"].excludes_zero  # the same signal as the plain LFM's
    assert s["vs plain LFM"].isna().all()  # only another option is compared with the plain LFM
    spread = seed_spread(ev, ("0",), (0, 1)).set_index("variant")
    assert set(spread.index) == {"ur_linear", "ur_ir_cr_mlp"}
    assert spread.loc["ur_ir_cr_mlp", "lfm seed 0"].excludes_zero
    (v,) = verdicts(summarise(ev, ("0",)), ("0",))
    assert v.best == "ur_ir_cr_mlp" and v.vs_prior.estimate > 0  # chosen by validation AUC, not test AUC


def test_runs_on_other_test_rows_are_refused():
    rows, records, scores = _world()
    labels, s = scores[records[0]["scores"]]
    scores[records[0]["scores"]] = (labels[::-1], s)
    with pytest.raises(ValueError, match="other test rows"):
        Evidence(records, {"0": rows}, scores.__getitem__, rounds=10)


def test_markdown_and_plot(tmp_path):
    from bench.transfer.plot import plot
    from bench.transfer.tables import Context, markdown

    rows, records, scores = _world()
    ev = Evidence(records, {"0": rows}, scores.__getitem__, rounds=100)
    summary = summarise(ev, ("0",))
    spread = seed_spread(ev, ("0",), (0, 1))
    spec, _ = parse_args(["--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "r.md"), "--tabs", "0",
                          "--lfm-seeds", "2", "--options", "none"])
    ctx = Context(spec, "cmd", [{"label": "plain seed 0", "version": "v", "layer": "dnn1", "valid_score": 0.7,
                                 "versions": 3, "checkpoint": "v2", "seen_through": "2022-05-06",
                                 "grown_ids": {"user_id": 12}, "unseen_test_ids": {"user_id": 0.025}}],
                  [("plain seed 0", "| point |")], {"0": {"user_strength": 3.0, "item_strength": 10.0, "alpha": 0.7,
                                                          "valid_auc": {"ctr_user": 0.6, "ctr_item": 0.55,
                                                                        "ctr_prior": 0.62}}},
                  {"ingest": 1.0}, 60.0, 2, 1)
    text = markdown(ctx, summary, spread, verdicts(summary, ("0",)), None)
    assert "**tab 0**: best transfer variant by validation AUC `ur_ir_cr_mlp`" in text
    assert "beats it" in text and "## Lift over `ctr_prior`" in text and "## Upstream variance" in text
    assert "| ur_ir_cr_mlp | " in text and "**\\***" in text
    assert "`ur_mlp`" in text  # the dropped variants are named with their reason
    assert "| user_id 12 | user_id 2.5% |" in text
    plot(spec.out_png, summary, spread, ("0",))
    assert spec.out_png.stat().st_size > 0


def test_shrunk_rates_by_hand():
    history = pd.DataFrame({"key": [1, 1, 2], "ds": [D0, D0 + dt.timedelta(1), D0],
                            "positives": [1, 0, 0], "rows": [2, 2, 1]})
    day = lambda i: np.datetime64(D0 + dt.timedelta(i))  # noqa: E731
    got = shrunk_rates(history, np.array([1, 1, 3, 1]), np.array([day(2), day(1), day(1), day(0)]), strength=2)
    # (1, day 2): 1 positive in 4 rows, global 1/5 -> (1 + 2/5) / 6; (1, day 1): day 0 only: 1/2, global 1/3
    # -> (1 + 2/3) / 4; an unseen key gets the global rate; nothing before day 0 -> 0.5
    assert got == pytest.approx([1.4 / 6, (1 + 2 / 3) / 4, 1 / 3, 0.5])


def test_prior_fit_uses_the_informative_side():
    rng = np.random.default_rng(3)
    users, items = np.arange(200) % 50, rng.integers(0, 30, 200)
    user_rate = rng.random(50)
    days = [D0 + dt.timedelta(i) for i in range(3)]
    hist_users = pd.DataFrame([(u, d, rng.binomial(20, user_rate[u]), 20) for u in range(50) for d in days],
                              columns=["key", "ds", "positives", "rows"])
    hist_items = pd.DataFrame([(i, d, rng.binomial(20, 0.3), 20) for i in range(30) for d in days],
                              columns=["key", "ds", "positives", "rows"])
    labels = rng.binomial(1, user_rate[users])
    rows = PriorRows(users, items, np.array([np.datetime64(D0 + dt.timedelta(3))] * 200))
    fit = fit_prior(rows, labels, hist_users, hist_items)
    assert fit.alpha >= 0.5 and fit.valid_auc["ctr_user"] > fit.valid_auc["ctr_item"]
    assert fit.valid_auc["ctr_prior"] >= max(fit.valid_auc["ctr_user"], fit.valid_auc["ctr_item"])


def test_more_data_validates_on_the_rows_none_validates_on():
    from models.training.encoding import chronological_split

    t = lambda a, b: pa.table({"event_timestamp": pa.array(np.arange(a, b) * 1000, pa.timestamp("ms")),  # noqa: E731
                               "i": np.arange(a, b)})
    window, earlier = t(1000, 1103), t(0, 57)
    _, valid = chronological_split(window, 0.2, "event_timestamp")
    more = pa.concat_tables([window, earlier])
    f = matching_valid_fraction(window.num_rows, more.num_rows, 0.2)
    _, valid_more = chronological_split(more, f, "event_timestamp")
    assert valid_more.column("i").to_pylist() == valid.column("i").to_pylist()


def test_arguments_and_subsets():
    spec, _ = parse_args([])
    assert spec.tabs == ("0", "4", "6", "2", "1") and len(spec.lfm_seeds) == 3 and len(spec.seeds) == 2
    assert not spec.options and spec.cadence == 1 and [v.value for v in spec.frozen] == ["ur_ir_cr_mlp"]
    w = spec.windows
    day = lambda m, d: dt.date(2022, m, d)  # noqa: E731
    assert w.protect == (day(5, 7), day(5, 8)) and w.probe == (day(4, 28), day(4, 29))
    assert w.base_through < w.export[0] == day(4, 28) and w.train[0] == day(4, 29)  # D's rows read D-1's export
    assert w.more == tuple(day(4, d) for d in range(25, 29))  # the days before any time-correct vector
    assert [r.label for r in spec.requests(depth=5)] == ["ur_linear", "ur_ir_mlp", "ur_ir_cr_mlp", "iim_k4"]
    assert len(spec.upstreams) == 3 and spec.reference.seed == 0
    many, _ = parse_args(["--options", "stem,crocodile"])
    assert len(many.upstreams) == 5 and many.option_tabs == ("1", "0")
    sub, _ = parse_args(["--tabs", "1", "--variants", "ur_ir_cr_mlp", "--frozen", "none", "--production", "none",
                         "--lfm-seeds", "1"])
    assert sub.tabs == ("1",) and [r.label for r in sub.requests(5)] == ["ur_ir_cr_mlp"] and len(sub.upstreams) == 1
    assert not sub.frozen and not sub.production
    quick, _ = parse_args(["--quick"])
    assert len(quick.tabs) == 2 and quick.seeds == (0,) and not quick.frozen and "bench/out" in str(quick.out_md)
    with pytest.raises(BadInput, match="--variants"):
        parse_args(["--variants", "none"])  # a baseline always runs; it is not a variant to pick
    with pytest.raises(BadInput, match="must start after the base's days"):
        parse_args(["--pretrain", "2022-04-25..2022-04-28"])  # the base would have seen the first export day
    with pytest.raises(BadInput, match="before --test"):
        parse_args(["--probe", "2022-05-06..2022-05-07"])  # the layer would be chosen on a test day
    with pytest.raises(BadInput, match="must cover"):
        parse_args(["--export", "2022-04-29..2022-05-07"])  # the first training day would read no snapshot


def test_other_seeds_adopt_the_layer_probed_on_the_first(tmp_path):
    """One probe per LFM option: the other seeds record the same layer, naming the version it was probed on."""
    from bench.transfer.prep import adopt
    from models.registry import Registry
    from models.training.pretrain import pretrain
    from spark_jobs.select_layer import recorded_selection
    from tests.support.tiny import tiny_config, tiny_table

    cfg = tiny_config(tmp_path)
    registry = Registry(cfg)
    first, second = (registry.register(r.model, r.encoders, r.metrics) for r in
                     (pretrain(tiny_table(300, 0), tiny_table(100, 1), cfg, seed=s, progress=None) for s in (0, 1)))
    assert first.model_version != second.model_version
    registry.set_selected_layer(first.model_version, "dnn1", {
        "task": "click", "probe_days": ["2022-04-30", "2022-05-01"], "warmup_days": [], "scores": {"dnn1": 0.6},
        "rows": [], "best": "dnn1", "protected": ["2022-05-02", "2022-05-08"]})
    adopt(cfg, second.model_version, recorded_selection(registry.card(first.model_version)))
    card = registry.card(second.model_version)
    assert card.selected_cr_layer == "dnn1" and card.probe_table["adopted_from"] == first.model_version
    assert card.probe_table["protected"] == ["2022-05-02", "2022-05-08"]


def test_segments_by_hand():
    """Users by their rows in the tab on earlier days (other tabs and the row's own day do not count); items by
    their first day anywhere in the log."""
    from bench.transfer.segments import NEW_ITEMS, OLD_ITEMS, USER_BINS, SegmentHistory, segment_masks

    day = lambda i: D0 + dt.timedelta(i)  # noqa: E731
    user_rows = pd.DataFrame({"key": ["a", "a", "a", "b", "c"], "scenario": ["1", "1", "0", "1", "1"],
                              "ds": [day(0), day(1), day(1), day(5), day(2)], "rows": [2, 4, 9, 3, 1]})
    item_first = pd.DataFrame({"key": ["x", "y"], "first": [day(0), day(3)]})
    masks = segment_masks(np.array(["a", "b", "c", "d"]), np.array(["x", "y", "y", "z"]),
                          np.array([day(5)] * 4, dtype="datetime64[D]"), "1", SegmentHistory(user_rows, item_first))
    cold, some, many = (masks[name] for _, _, name in USER_BINS)
    assert cold.tolist() == [False, True, False, True]  # b's rows are on the row's own day; d has none
    assert some.tolist() == [False, False, True, False] and many.tolist() == [True, False, False, False]  # a: 6
    assert masks[NEW_ITEMS].tolist() == [False, True, True, True] and (masks[OLD_ITEMS] == ~masks[NEW_ITEMS]).all()


def test_segment_lift_is_the_paired_lift_on_the_segments_rows():
    from bench.transfer.segments import segment_lift
    from bench.transfer.stats import auc as plain_auc

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600).astype(np.int8)
    users = rng.integers(0, 50, 600)
    mask = np.arange(600) < 300
    good = np.where(mask, labels * 2.0, 0.0) + rng.normal(size=600)  # signal on the segment only
    plain = rng.normal(size=600)
    inside = segment_lift(labels, users, mask, [good], [plain], rounds=200)
    outside = segment_lift(labels, users, ~mask, [good], [plain], rounds=200)
    assert inside.estimate == pytest.approx(plain_auc(labels[mask], good[mask]) - plain_auc(labels[mask],
                                                                                            plain[mask]))
    assert inside.excludes_zero and not outside.excludes_zero
    assert segment_lift(np.ones(600, np.int8), users, mask, [good], [plain], rounds=10) is None  # one class


def test_click_rate_features_are_the_prior_as_of_each_rows_day():
    from bench.transfer.baselines import RATE_FIELDS, PriorFit, click_rate_schema, with_click_rates
    from lfm.config.schema import DataSchema, FieldKind

    schema = DataSchema()
    history = pd.DataFrame({"key": ["1", "1"], "ds": [D0, D0 + dt.timedelta(1)], "positives": [2, 0],
                            "rows": [2, 2]})
    table = pa.table({schema.user_key: [1, 1], schema.item_key: [7, 7],
                      "ds": pa.array([D0 + dt.timedelta(1), D0 + dt.timedelta(2)], pa.date32())})
    fit = PriorFit(user_strength=2.0, item_strength=2.0, alpha=0.5, valid_auc={})
    out = with_click_rates(table, schema, fit, history, history.iloc[:0])
    # day 1 sees day 0 only: (2 + 2 * 1.0) / (2 + 2); day 2 sees both: (2 + 2 * 0.5) / (4 + 2)
    assert out.column(RATE_FIELDS[0]).to_pylist() == pytest.approx([1.0, 0.5])
    from bench.transfer.runs import Worker
    from lfm.config import LfmConfig

    worker = Worker(LfmConfig(), None, "is_click", {})  # what a prod run trains with
    assert [f.name for f in worker.with_rates.schema.user_fields][-1] == RATE_FIELDS[0]
    assert RATE_FIELDS[0] not in [f.name for f in worker.cfg.schema.user_fields]
    with_rates = click_rate_schema(schema)
    assert [f.kind for f in with_rates.user_fields if f.name in RATE_FIELDS] == [FieldKind.numeric]
    assert [f.name for f in with_rates.item_fields][-1] == RATE_FIELDS[1] and len(schema.item_fields) == 9

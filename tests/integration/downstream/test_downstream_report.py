"""The transfer study end to end on synthetic data: ingest, one LFM lineage (its base, select-layer on the base
with the test days protected, run-daily with daily updates), the frozen base exported beside it, Feast training
sets of released days, every baseline, the production model and every variant, the statistics, the segments and
every output; a resumed run trains nothing. The time-correctness of the training rows is checked against the
checkpoints themselves. Then `lfm train-downstream` on the same lakehouse.
(The cells, intervals and tables on hand-made runs: tests/unit/bench/.)"""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.config import REPO, make_config

sys.path.insert(0, str(REPO))  # bench/ is a folder of scripts, not an installed package
from bench.transfer.runs import CONTROL  # noqa: E402
from bench.transfer.spec import parse_args  # noqa: E402
from bench.transfer.stats import auc  # noqa: E402

D0 = dt.date(2022, 4, 25)


@pytest.mark.slow
def test_small_study_end_to_end_on_synthetic_data(spark, tmp_path):
    """One lineage (3 export days, 2 daily updates) and the frozen base over the same days: each export day is a
    gated run-daily, and CI must stay short. The other LFM options take the same code path with another
    `model.embedding`; pooling LFM seeds, their spread and the option cells are the unit tests' business
    (tests/unit/bench/test_transfer_report.py)."""
    import yaml

    from bench.transfer.prep import workdir_config
    from bench.transfer.stats import gauc
    from bench.transfer.report import main, run_report
    from models.registry import Registry
    from spark_jobs.synth import SynthSpec, write_synthetic

    source = tmp_path / "synth"
    write_synthetic(SynthSpec(users=400, items=150, days=6, events_per_day=3000, seed=3, start=D0.isoformat()),
                    source)
    day = lambda i: (D0 + dt.timedelta(days=i)).isoformat()  # noqa: E731
    argv = ["--source", str(source), "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "report.md"),
            "--pretrain", day(0), "--pretrain-valid", day(1), "--probe-warmup", "1",
            "--export", f"{day(2)}..{day(4)}", "--train", f"{day(3)}..{day(4)}", "--test", day(5),
            "--tabs", "1,0", "--lfm-seeds", "1", "--seeds", "1", "--options", "none",
            "--variants", "ur_linear,ur_ir_cr_mlp,iim", "--ks", "-1", "--max-epochs", "4", "--rounds", "50",
            "--jobs", "2"]  # two worker processes: the report's parallel path
    spec, _ = parse_args(argv)
    base = make_config(tmp_path, model={"embedding_dim": 4, "user_tower": [16, 8], "item_tower": [16, 8],
                                        "cross_layers": 1, "dnn": [16, 8]},
                       train={"batch_size": 512, "max_epochs": 2, "threads": 1, "lr": 1e-2},
                       refresh={"probe_min_test_rows": 50, "probe_bootstrap_rounds": 20},
                       # an 8-d final layer spans fewer directions than a real width, and one epoch on one day
                       # moves a tiny model's vectors far
                       quality={"vectors": {"min_effective_rank": 2.0, "min_information_abundance": 1.2},
                                "tables": {t: {"min_mean_cosine": -1.0, "max_moved_share": 1.0,
                                               **({"min_version_cosine": -1.0} if t in ("ur", "ir") else {})}
                                           for t in ("ur", "ir", "cr_user", "cr_item")}})
    config_file = tmp_path / "lfm.yaml"
    config_file.write_text(yaml.safe_dump(base.model_dump(mode="json", by_alias=True, exclude={"base_dir"})))
    result = run_report(spec, base, "test")
    work = workdir_config(base, spec.workdir, spec.cadence)
    _check_time_correct(work, spec, result.versions["plain seed 0"], tab="1")

    s = result.summary
    assert set(s.tab) == {"1", "0"}
    cells = set(zip(s.tab, s.variant, s.option))
    for tab in ("1", "0"):
        assert {(tab, v, CONTROL) for v in ("none", "none_more_data", "ctr_user", "ctr_item", "ctr_prior",
                                            "iim_random", "prod", "prod_window")} <= cells
        assert {(tab, v, "plain") for v in ("ur_linear", "ur_ir_cr_mlp", "iim_k3", "prod+ur_ir_mlp",
                                            "prod+ur_ir_cr_mlp")} <= cells
        assert (tab, "ur_ir_cr_mlp", "frozen") in cells
    assert set(s.option) == {CONTROL, "plain", "frozen"}
    plain = s[(s.option == "plain")]
    assert (plain.lfm_seeds == 1).all() and plain["vs ctr_prior"].notna().all() and plain["vs prod"].notna().all()
    by_run = {(r["tab"], r["variant"], r["option"]): r["valid_auc"] for r in result.records if r["seed"] == 0}
    for tab in ("1", "0"):  # the click rates are fields of their own: prod is not none_more_data again
        assert by_run[(tab, "prod", CONTROL)] != by_run[(tab, "none_more_data", CONTROL)]
        assert by_run[(tab, "prod_window", CONTROL)] != by_run[(tab, "none", CONTROL)]
        assert by_run[(tab, "prod+ur_ir_cr_mlp", "plain")] != by_run[(tab, "ur_ir_cr_mlp", "plain")]
    frozen = s[s.option == "frozen"]
    assert frozen["vs plain LFM"].notna().all()  # the frozen-LFM row against the lineage's same variant
    # the layer was chosen on the probe days, after the base's days and before the test days
    registry = Registry(work)
    card = registry.card(result.versions["plain seed 0"])
    assert card.selected_cr_layer and card.probe_table["probe_days"] == [day(2), day(3)]
    assert card.probe_table["protected"] == [day(5), day(5)]
    # the lineage grew: the base and one version per update; the IIM started from the last before the test days
    from models.lineage import lineage_of, members
    versions = members(card.model_version, registry.list())
    assert len(versions) == 3 and result.versions["plain seed 0 (frozen)"] == card.model_version
    ups = {r["label"]: r for r in json.loads(spec.out_json.read_text())["upstreams"]}
    unseen = {label: r["unseen_test_ids"] for label, r in ups.items()}  # a lineage learns the ids a base never saw
    assert set(unseen["plain seed 0"]) == {"user_id", "video_id"}
    assert all(unseen["plain seed 0"][k] <= unseen["plain seed 0 (frozen)"][k] for k in ("user_id", "video_id"))
    iim = {r["checkpoint"] for r in ups.values() if r["checkpoint"]}
    assert len(iim) == 1 and lineage_of(registry.card(iim.pop())).seen_through == dt.date.fromisoformat(day(3))

    # every cell recomputes from the published files: the records and the per-row ranks
    doc = json.loads(spec.out_json.read_text())
    recs = doc["records"]
    assert len({(r["tab"], r["variant"], r["option"], r["lfm_seed"], r["seed"]) for r in recs}) == len(recs)
    arrays = np.load(spec.out_scores)
    for r in recs:
        labels, users = arrays[f"tab{r['tab']}.labels"], arrays[f"tab{r['tab']}.users"]
        assert auc(labels, arrays[r["scores"]]) == pytest.approx(r["test_auc"], abs=1e-12)
        assert gauc(users, labels, arrays[r["scores"]]) == pytest.approx(r["test_gauc"], abs=1e-12, nan_ok=True)
    for tab in ("1", "0"):  # every segment mask recorded, the user bins and the item bins each cover every row
        masks = [arrays[f"tab{tab}.segment{i}"] for i in range(len(doc["segments"]))]
        assert sum(m.astype(int) for m in masks[:3]).tolist() == [1] * len(masks[0])
        assert (masks[3] ^ masks[4]).all()
    text = spec.out_md.read_text()
    assert text.startswith("# Transfer report") and "## Verdict per tab" in text and "Wall time" in text
    assert "## The production question" in text and "## Where transfer pays" in text
    assert spec.out_png.is_file()

    # resumed on the same workdir: nothing is retrained, the same numbers come out
    assert main(["--config", str(config_file), *argv, "--resume"]) == 0
    again = json.loads(spec.out_json.read_text())["records"]
    assert [r["test_auc"] for r in again] == [r["test_auc"] for r in recs]
    # a used workdir without --resume is one clear line, exit 2
    assert main(["--config", str(config_file), *argv]) == 2

    # The verb on the same lakehouse: a retrieval two-tower saves its projection for `lfm retrieve`; bad input
    # stops with one line and exit code 2.
    from cli.main import main as lfm
    from models.two_tower import load_user_projection

    version = result.versions["plain seed 0"]
    work_file = tmp_path / "work.yaml"
    work_file.write_text(yaml.safe_dump(work.model_dump(mode="json", by_alias=True, exclude={"base_dir"})))
    from bench.transfer.prep import export_id
    lineage = export_id(work, version, registry.card(version).selected_cr_layer)  # the frozen base is another export
    windows = ["--train", day(4), "--test", day(5), "--feature-service", f"lfm_e{lineage}"]
    projection = tmp_path / "proj.pt"
    assert lfm(["--config", str(work_file), "train-downstream", "--scenario", "1", "--task", "is_click",
                "--transfer", "retrieval_ur", "--max-epochs", "3", "--save-projection", str(projection),
                *windows]) == 0
    encoder = load_user_projection(projection)
    assert encoder.source == "ur" and encoder.card.model_version == version
    assert lfm(["--config", str(work_file), "train-downstream", "--scenario", "99", "--task", "is_click",
                "--transfer", "none", *windows]) == 2
    assert lfm(["--config", str(work_file), "train-downstream", "--scenario", "1", "--task", "is_bought",
                "--transfer", "none", *windows]) == 2


def _check_time_correct(cfg, spec, base: str, tab: str) -> None:
    """Every training and test row's UR and IR were made by a version whose seen days end before the row's day.

    Independent evidence: each lineage version's checkpoint (read with its card straight from the registry folder)
    recomputes the row's user and item vectors from the row's own fields; the row's vectors must match exactly one
    version's, and that version's card must say it saw only earlier days. Rows must read more than one version,
    and a later version (one that saw the row's day) must not match.
    """
    import pyarrow as pa

    from bench.transfer.prep import export_id
    from inference.extract import Extractor
    from models.lineage import members
    from models.registry import Registry

    registry = Registry(cfg)
    export = export_id(cfg, base, registry.card(base).selected_cr_layer)
    seen = {}
    for card in members(base, registry.list()):
        doc = json.loads((Path(cfg.registry.path) / card.model_version / "card.json").read_text())
        seen[card.model_version] = max(dt.date.fromisoformat(d) for d in doc["content"]["lineage"]["seen_days"])
    assert len(seen) == 3
    folder = spec.workdir / "sets" / export
    rows = pa.concat_tables([pa.ipc.open_file(pa.memory_map(str(folder / f"tab{tab}.{part}.arrow"))).read_all()
                             for part in ("train", "test")])
    rows = rows.filter(pa.compute.is_valid(rows["ur"]))
    assert rows.num_rows > 100
    days = rows["ds"].to_pylist()
    makers = []
    for rep, vectors_of in (("ur", "user_vectors"), ("ir", "item_vectors")):
        got = _unit(np.asarray(rows[rep].to_pylist(), dtype=np.float64))
        match = {}
        for version in seen:
            again = getattr(Extractor(registry.path(version), schema=cfg.schema), vectors_of)(rows)
            match[version] = np.abs(got - _unit(again.astype(np.float64))).max(axis=1) < 1e-5
        hits = np.stack(list(match.values()))  # (versions, rows)
        assert (hits.sum(axis=0) == 1).all(), f"{rep}: a row matches no version, or more than one"
        versions = list(match)
        maker = [versions[i] for i in hits.argmax(axis=0)]
        assert all(seen[v] < d for v, d in zip(maker, days)), f"{rep}: a row read a version that saw its day"
        makers.append(maker)
    assert makers[0] == makers[1]  # one version made both of a row's vectors
    assert len(set(makers[0])) >= 2  # rows of different days read different versions
    later = [v for v in seen if seen[v] >= min(days)]
    assert later and not any(m in later and seen[m] >= d for m, d in zip(makers[0], days))


def _unit(m: np.ndarray) -> np.ndarray:
    """Rows as unit vectors: the export may normalise them; the direction is the model's."""
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

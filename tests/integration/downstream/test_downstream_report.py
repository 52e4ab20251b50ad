"""The transfer study end to end on synthetic data: ingest, one LFM, select-layer with the downstream window
protected, run-daily exports, Feast training sets of released days, every baseline and variant, the statistics and
every output; a resumed run trains nothing. Then `lfm train-downstream` on the same lakehouse.
(The cells, intervals and tables on hand-made runs: tests/unit/bench/.)"""
from __future__ import annotations

import datetime as dt
import json
import sys

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
    """One LFM: each costs a probe and a gated run-daily per export day (about 6 minutes on a loaded 2-core machine),
    and CI must stay short. The other LFM options take the same code path with another `model.embedding` (measured
    end to end with `--options stem`: 21 min with the resumed run); pooling LFM seeds, their spread and the option
    cells are the unit tests' business (tests/unit/bench/test_transfer_report.py)."""
    import yaml

    from bench.transfer.prep import workdir_config
    from bench.transfer.stats import gauc
    from bench.transfer.report import main, run_report
    from models.registry import Registry
    from spark_jobs.synth import SynthSpec, write_synthetic

    source = tmp_path / "synth"
    write_synthetic(SynthSpec(users=400, items=150, days=8, events_per_day=3000, seed=3, start=D0.isoformat()),
                    source)
    day = lambda i: (D0 + dt.timedelta(days=i)).isoformat()  # noqa: E731
    argv = ["--source", str(source), "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "report.md"),
            "--pretrain", f"{day(0)}..{day(1)}", "--pretrain-valid", day(2), "--probe-warmup", "1",
            "--export", f"{day(5)}..{day(6)}", "--train", day(6), "--test", day(7),
            "--tabs", "1,0", "--lfm-seeds", "1", "--seeds", "1", "--options", "none",
            "--variants", "ur_linear,ur_ir_cr_mlp,iim", "--ks", "-1", "--max-epochs", "4", "--rounds", "50",
            "--jobs", "2"]  # two worker processes: the report's parallel path
    spec, _ = parse_args(argv)
    base = make_config(tmp_path, model={"embedding_dim": 4, "user_tower": [16, 8], "item_tower": [16, 8],
                                        "cross_layers": 1, "dnn": [16, 8]},
                       train={"batch_size": 512, "max_epochs": 2, "threads": 1, "lr": 1e-2},
                       refresh={"probe_min_test_rows": 50, "probe_bootstrap_rounds": 20},
                       # an 8-d final layer spans fewer directions than a real width
                       quality={"vectors": {"min_effective_rank": 2.0, "min_information_abundance": 1.2}})
    config_file = tmp_path / "lfm.yaml"
    config_file.write_text(yaml.safe_dump(base.model_dump(mode="json", by_alias=True, exclude={"base_dir"})))
    result = run_report(spec, base, "test")

    s = result.summary
    assert set(s.tab) == {"1", "0"}
    cells = set(zip(s.tab, s.variant, s.option))
    for tab in ("1", "0"):
        assert {(tab, v, CONTROL) for v in ("none", "none_more_data", "ctr_user", "ctr_item", "ctr_prior",
                                            "iim_random")} <= cells
        assert {(tab, v, "plain") for v in ("ur_linear", "ur_ir_cr_mlp", "iim_k3")} <= cells
    assert set(s.option) == {CONTROL, "plain"}
    plain = s[(s.option == "plain")]
    assert (plain.lfm_seeds == 1).all() and plain["vs ctr_prior"].notna().all()
    # the layer each LFM exported was chosen on the probe days, before the downstream window
    registry = Registry(workdir_config(base, spec.workdir))
    for version in result.versions.values():
        card = registry.card(version)
        assert card.selected_cr_layer and max(card.probe_table["probe_days"]) < day(6)
        assert card.probe_table["protected"] == [day(6), day(7)]

    # every cell recomputes from the published files: the records and the per-row ranks
    doc = json.loads(spec.out_json.read_text())
    recs = doc["records"]
    assert len({(r["tab"], r["variant"], r["option"], r["lfm_seed"], r["seed"]) for r in recs}) == len(recs)
    arrays = np.load(spec.out_scores)
    for r in recs:
        labels, users = arrays[f"tab{r['tab']}.labels"], arrays[f"tab{r['tab']}.users"]
        assert auc(labels, arrays[r["scores"]]) == pytest.approx(r["test_auc"], abs=1e-12)
        assert gauc(users, labels, arrays[r["scores"]]) == pytest.approx(r["test_gauc"], abs=1e-12, nan_ok=True)
    text = spec.out_md.read_text()
    assert text.startswith("# Transfer report") and "## Verdict per tab" in text and "Wall time" in text
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
    work_file.write_text(yaml.safe_dump(workdir_config(base, spec.workdir).model_dump(
        mode="json", by_alias=True, exclude={"base_dir"})))
    windows = ["--train", day(6), "--test", day(7), "--model", version]
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

"""The transfer report: its statistics on hand-made runs (fast), and its quick mode end to end (slow)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import sys

import numpy as np
import pandas as pd
import pytest

from tests.support.config import REPO, make_config

sys.path.insert(0, str(REPO))  # bench/ is a folder of scripts, not an installed package
from bench.transfer_report import (ReportSpec, Timer, markdown, parse_args, plot, requests, run_report,
                                   summarise, sweep_layers)  # noqa: E402

D0 = dt.date(2022, 4, 25)


def _runs(aucs: dict[str, list[float]], tab: str = "0", layer: str = "dnn2") -> list[dict]:
    level = {"none": "none", "iim_k1": "module", "iim_random": "module", "retrieval_ur": "model",
             "retrieval_scratch": "model"}
    return [{"tab": tab, "variant": v, "granularity": level.get(v, "feature"), "seed": s, "cr_layer": layer,
             "test_auc": a, "valid_auc": a, "best_epoch": 3, "epochs": 8, "converged": True, "seconds": 1.0,
             "rows": [1, 1, 1], "recall": {"20": 0.1, "100": 0.3} if v.startswith("retrieval") else {},
             "coverage": {}, "bootstrap_se": 0.01 if (v == "none" and s == 0) else np.nan}
            for v, values in aucs.items() for s, a in enumerate(values)]


def _spec(tmp_path: Path, **kw) -> ReportSpec:
    spec, _ = parse_args(["--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "r.md"), "--seeds", "3"])
    return spec.__class__(**{**spec.__dict__, **kw})


def test_lifts_and_two_se_significance(tmp_path):
    runs = pd.DataFrame(_runs({
        "none": [0.700, 0.701, 0.699],
        "ur_linear": [0.702, 0.698, 0.703],  # within noise
        "ur_ir_cr_gate": [0.720, 0.721, 0.719],  # clearly better
        "iim_k1": [0.710, 0.711, 0.709], "iim_random": [0.705, 0.705, 0.706],
        "retrieval_scratch": [0.60, 0.61, 0.60], "retrieval_ur": [0.65, 0.66, 0.65],
    }) + _runs({"cr_gate": [0.71, 0.71]}, layer="cross1") + _runs({"cr_gate": [0.72, 0.72]}))
    s = summarise(runs, "dnn2").set_index("variant")
    assert "cr_gate" in s.index and s.loc["cr_gate", "n"] == 2  # the sweep's other layers stay out of it
    assert s.loc["ur_ir_cr_gate", "lift_none"] == pytest.approx(0.02)
    assert s.loc["ur_ir_cr_gate", "sig_none"] is True
    assert s.loc["ur_linear", "sig_none"] is False
    assert s.loc["ur_ir_cr_gate", "lift_ur_linear"] == pytest.approx(0.019, abs=1e-3)
    assert s.loc["iim_k1", "lift_control"] == pytest.approx(0.710 - 0.70533, abs=1e-4)
    assert s.loc["retrieval_ur", "lift_control"] == pytest.approx(0.05, abs=1e-3)
    assert np.isnan(s.loc["none", "lift_none"])
    assert s.loc["retrieval_ur", "recall@20"] == pytest.approx(0.1)

    spec = _spec(tmp_path)
    text = markdown(spec, summarise(runs, "dnn2"), runs, "ab" * 10, "dnn2", Timer(), "cmd", {"cross1": 4, "dnn2": 8})
    assert "| ur_ir_cr_gate |" in text and "+0.0200 **\\***" in text
    assert "by CR extraction layer" in text and "dnn2 (exported)" in text
    assert "test-row bootstrap SE" in text
    plot(spec, summarise(runs, "dnn2"), runs, {"cross1": 4, "dnn2": 8})
    assert spec.out_png.stat().st_size > 0


def test_variant_list_covers_the_issue():
    spec, _ = parse_args([])
    labels = [r.label for r in requests(spec, depth=5)]
    for v in ("none", "ur_linear", "ur_mlp", "ur_ir_mlp", "ur_ir_cr_gate", "ur_ir_cr_mlp", "iim_random",
              "retrieval_scratch", "retrieval_ur", "retrieval_cr_user"):
        assert v in labels
    assert [l for l in labels if l.startswith("iim_k")] == [f"iim_k{k}" for k in range(6)]
    assert spec.tabs == ("0", "4", "6", "2", "1") and len(spec.seeds) >= 5
    quick, _ = parse_args(["--quick"])
    assert len(quick.tabs) == 2 and len(quick.seeds) == 1 and quick.layers == ()
    assert [r.label for r in requests(quick, depth=5) if r.label.startswith("iim_k")] == ["iim_k0", "iim_k5"]
    assert "bench/out" in str(quick.out_md)  # quick mode never overwrites docs/transfer_report.md
    points = ["embed", "cross1", "cross2", "cross3", "dnn1", "dnn2"]
    assert sweep_layers(None, points, "dnn2") == ["embed", "cross3"]
    assert sweep_layers(("all",), points, "dnn2") == points[:-1]
    assert sweep_layers((), points, "dnn2") == []
    with pytest.raises(SystemExit):
        sweep_layers(("dnn9",), points, "dnn2")


@pytest.mark.slow
def test_quick_report_runs_end_to_end_on_synthetic_data(spark, tmp_path):
    """Synthetic KuaiRand-layout data through ingest, pretrain, backfill, Feast and every variant."""
    from spark_jobs.synth import SynthSpec, write_synthetic

    source = tmp_path / "synth"
    write_synthetic(SynthSpec(users=400, items=150, days=6, events_per_day=3000, seed=3, start=D0.isoformat()),
                    source)
    day = lambda i: (D0 + dt.timedelta(days=i)).isoformat()  # noqa: E731
    spec, _ = parse_args(["--quick", "--source", str(source), "--workdir", str(tmp_path / "work"),
                          "--out", str(tmp_path / "report.md"), "--pretrain", f"{day(0)}..{day(1)}",
                          "--pretrain-valid", day(2), "--refresh", f"{day(2)}..{day(5)}", "--warmup-days", "2",
                          "--train", f"{day(3)}..{day(4)}", "--test", day(5), "--tabs", "1,0", "--max-epochs", "4",
                          "--jobs", "2"])  # two worker processes: the report's parallel path
    base = make_config(tmp_path, model={"embedding_dim": 4, "user_tower": [16, 8], "item_tower": [16, 8],
                                        "cross_layers": 1, "dnn": [16, 8]},
                       train={"batch_size": 512, "max_epochs": 2, "threads": 1, "lr": 1e-2},
                       downstream={"trainer": {"threads": 1, "lr": 1e-2}},
                       # the report gates its backfill; an 8-d final layer spans fewer directions than a real width
                       quality={"vectors": {"min_effective_rank": 2.0, "min_information_abundance": 1.2}})
    result = run_report(spec, base, "test")
    s = result.summary
    assert set(s.tab) == {"1", "0"}
    assert {"none", "ur_ir_cr_gate", "iim_k0", "iim_k3", "iim_random", "retrieval_ur"} <= set(s.variant)
    assert s.auc.between(0.0, 1.0).all()
    order = [(r.tab, r.variant) for r in result.runs.itertuples()]
    assert order[0] == ("1", "none") and order[-1] == ("0", "retrieval_cr_user")  # (tab, request) order kept
    assert result.runs.bootstrap_se.notna().sum() == 2  # one no-transfer bootstrap per tab
    cov = result.runs[result.runs.variant == "ur_ir_cr_mlp"].coverage.iloc[0]
    assert cov["ur"] > 0.5 and cov["ir"] > 0.5  # the point-in-time join found snapshots for most rows
    assert spec.out_md.read_text().startswith("# Transfer report")
    assert spec.out_png.is_file() and spec.out_json.is_file()

    # The verb on the same lakehouse: a retrieval two-tower saves its projection for `lfm retrieve`; bad input
    # stops with one line and exit code 2.
    import yaml

    from bench.transfer_report import workdir_config
    from cli.main import main
    from models.two_tower import load_user_projection

    cfg = workdir_config(base, spec.workdir)
    config_file = tmp_path / "lfm.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True, exclude={"base_dir"})))
    windows = ["--train", f"{day(3)}..{day(4)}", "--test", day(5), "--model", result.model_version]
    projection = tmp_path / "proj.pt"
    assert main(["--config", str(config_file), "train-downstream", "--scenario", "1", "--task", "is_click",
                 "--transfer", "retrieval_ur", "--max-epochs", "3", "--save-projection", str(projection),
                 *windows]) == 0
    encoder = load_user_projection(projection)
    assert encoder.source == "ur" and encoder.card.model_version == result.model_version
    assert main(["--config", str(config_file), "train-downstream", "--scenario", "99", "--task", "is_click",
                 "--transfer", "none", *windows]) == 2
    assert main(["--config", str(config_file), "train-downstream", "--scenario", "1", "--task", "is_bought",
                 "--transfer", "none", *windows]) == 2

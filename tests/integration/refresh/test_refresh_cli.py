"""`lfm refresh`, `lfm backfill`, `lfm select-layer`: argument checks, and layer selection end to end."""
from __future__ import annotations

import shutil

import pytest
import yaml

from cli.main import build_parser, main


def test_verbs_are_registered():
    parser = build_parser()
    args = parser.parse_args(["refresh", "--ds", "2022-05-02", "--cold-start"])
    assert args.cold_start and str(args.ds) == "2022-05-02" and args.model is None
    args = parser.parse_args(["backfill", "--from", "2022-05-02", "--to", "2022-05-08", "--warmup-days", "3"])
    assert args.warmup_days == 3 and not args.cold_start
    args = parser.parse_args(["select-layer", "--days", "2022-05-02..2022-05-04"])
    assert len(args.days) == 3 and args.protect is None
    args = parser.parse_args(["select-layer", "--protect", "2022-05-02..2022-05-08"])
    assert [str(d) for d in args.protect] == ["2022-05-02", "2022-05-08"]


@pytest.mark.parametrize("argv", [
    ["refresh", "--ds", "2022-5-2"],
    ["refresh", "--ds", "2022-05-02", "--model", "../x"],
    ["backfill", "--from", "2022-05-02", "--to", "2022-05-03", "--cold-start", "--warmup-days", "2"],
    ["select-layer", "--protect", "2022-05-02"],  # a window needs FIRST..LAST
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_backfill_range_backwards_is_one_line_error(spark, tmp_path, capsys):
    cfg_file = tmp_path / "lfm.yaml"
    cfg_file.write_text(yaml.safe_dump({"lakehouse": str(tmp_path / "lake")}))
    assert main(["--config", str(cfg_file), "backfill", "--from", "2022-05-03", "--to", "2022-05-02"]) == 2
    assert "--from must not be after --to" in capsys.readouterr().err


def test_default_probe_days_end_before_the_protected_window():
    import datetime as dt

    from spark_jobs.select_layer import ProbeOverlap, check_protected, default_probe_days

    day = lambda i: dt.date(2022, 4, 25) + dt.timedelta(days=i)  # noqa: E731
    available, trained = [day(i) for i in range(14)], [day(0), day(3), day(4)]  # trained up to day 4
    assert default_probe_days(trained, available, (day(7), day(13))) == [day(5), day(6)]
    assert default_probe_days(trained, available) == [day(5), day(6)]  # no window: the fewest a probe needs
    assert default_probe_days(trained, available, (day(6), day(13))) == [day(5)]  # too few: select_layer refuses
    check_protected([day(5), day(6)], (day(7), day(13)))
    with pytest.raises(ProbeOverlap, match="protected window"):
        check_protected([day(6), day(7)], (day(7), day(13)))


def test_probe_days_inside_the_protected_window_are_refused(spark, tmp_path, capsys):
    cfg_file = tmp_path / "lfm.yaml"
    cfg_file.write_text(yaml.safe_dump({"lakehouse": str(tmp_path / "lake"), "registry": {"path": str(tmp_path)}}))
    code = main(["--config", str(cfg_file), "select-layer", "--days", "2022-05-01..2022-05-03",
                 "--protect", "2022-05-03..2022-05-08"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "['2022-05-03'] fall in the protected window 2022-05-03..2022-05-08" in err


@pytest.mark.slow
def test_select_layer_scores_every_point_and_records_the_best(spark, world, tmp_path, capsys):
    from models.registry import Registry
    from pipeline.spec import resolve_export
    from spark_jobs.select_layer import tower_order
    from tests.support.worlds import SMALL_MODEL, SMALL_TRAIN

    registry = tmp_path / "registry"  # a copy: recording a layer must not change the other tests' model
    shutil.copytree(world.registry / world.model_a, registry / world.model_a)
    cfg = world.config("select", registry=registry, refresh={"probe_min_test_rows": 100})
    cfg_file = tmp_path / "lfm.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "lakehouse": str(cfg.resolve(cfg.lakehouse)), "registry": {"path": str(registry)}, "model": SMALL_MODEL,
        "train": SMALL_TRAIN, "quality": {"enabled": False}, "refresh": {"probe_min_test_rows": 100}}))
    code = main(["--config", str(cfg_file), "select-layer", "--model", world.model_a,
                 "--days", "2022-04-27..2022-04-28", "--warmup-days", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    card = Registry(cfg).card(world.model_a)
    points = tower_order(card.cr_points)
    assert card.selected_cr_layer in points
    for p in points:
        assert f"| {p}" in out
    rows = card.probe_table["rows"]
    assert {r["layer"] for r in rows} == set(points)
    assert any(r["auc"] is not None for r in rows)
    best = max(v for v in card.probe_table["scores"].values() if v is not None)
    assert card.probe_table["scores"][card.selected_cr_layer] == best
    # the export (what refresh writes) uses the recorded layer unless told otherwise
    assert resolve_export(cfg, world.model_a).spec.cr_layer == card.selected_cr_layer

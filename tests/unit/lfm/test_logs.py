"""What a person sees of `lfm`: one line per step on the screen, the log in its file (and on the screen with -v),
a ticker only on a terminal. No Spark: the verb below is `lfm status` over an empty lakehouse, the steps a
two-step chain of plain functions."""
from __future__ import annotations

import datetime as dt
import io
import logging

import pytest
import yaml

from lfm.logs import LOG_FILE
from lfm.progress import ERASE, ticking
from tests.support.cli import cli


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "lfm.yaml"
    path.write_text(yaml.safe_dump({"lakehouse": str(tmp_path / "lake"), "logs": str(tmp_path / "logs")}))
    return path


def test_the_log_goes_to_its_file_and_to_the_screen_only_with_verbose(conf, tmp_path, monkeypatch):
    from cli.verbs import daily

    def say_and_log(args, cfg):  # a verb that prints its line and logs the same fact, like a step
        print("  2022-04-29 refresh     done: 5,876 rows in 17.3s")
        logging.getLogger("lfm.steps").info("run_id=r1 ds=2022-04-29 step=refresh status=succeeded rows=5876")
        logging.getLogger("lfm.steps").warning("a warning reaches the screen either way")
        return 0

    monkeypatch.setattr(daily, "run_status", say_and_log)
    quiet, loud = cli("--config", str(conf), "status"), cli("-v", "--config", str(conf), "status")
    assert quiet.code == loud.code == 0
    for run in (quiet, loud):
        assert run.out.count("refresh     done:") == 1
        assert "a warning reaches the screen either way" in run.err
    assert "step=refresh status=succeeded" not in quiet.err + quiet.out
    assert "INFO lfm.steps run_id=r1 ds=2022-04-29 step=refresh status=succeeded" in loud.err
    text = (tmp_path / "logs" / LOG_FILE).read_text()
    assert text.count("step=refresh status=succeeded") == 2  # both runs, appended


def test_a_failed_verb_says_one_line_and_the_file_keeps_it(conf, tmp_path, monkeypatch):
    from cli.verbs import daily
    from lfm.errors import LfmError

    def refuse(args, cfg):
        raise LfmError("no events ingested for ds 2022-04-29: pass --source DIR")

    monkeypatch.setattr(daily, "run_status", refuse)
    bad = cli("--config", str(conf), "status")
    assert bad.code == 2
    assert bad.err.strip() == "lfm status: error: no events ingested for ds 2022-04-29: pass --source DIR"
    assert "lfm status failed: no events ingested" in (tmp_path / "logs" / LOG_FILE).read_text()


def test_the_default_log_folder_is_data_logs_beside_the_config_whatever_the_lakehouse(tmp_path):
    from lfm.config import ConfigError, config_from_dict

    for lake in (str(tmp_path / "lake"), "s3://bucket/lfm"):
        cfg = config_from_dict({"lakehouse": lake}, base_dir=str(tmp_path))
        assert cfg.log_dir() == tmp_path / "data" / "logs"
    with pytest.raises(ConfigError, match="logs: 's3://bucket/logs' must be a local folder"):
        config_from_dict({"logs": "s3://bucket/logs"}).log_dir()


def test_each_step_is_said_once_and_ticks_only_on_a_terminal(monkeypatch):
    from pipeline.daily import _with_progress
    from pipeline.steps import DayContext, Step

    said: list[str] = []
    ctx = DayContext(cfg=None, ds=dt.date(2022, 4, 29))  # type: ignore[arg-type]
    assert _with_progress(Step("refresh", lambda c: 5876), said.append).run(ctx) == 5876
    assert len(said) == 1 and said[0].startswith("  2022-04-29 refresh     done: 5,876 rows in ")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe, tty = io.StringIO(), Terminal()
    with ticking("  refresh", every=0.01, stream=pipe):
        pass
    with ticking("  refresh", every=0.01, stream=tty):
        import time

        time.sleep(0.1)
    assert pipe.getvalue() == ""
    assert "  refresh 0s ..." in tty.getvalue() and tty.getvalue().endswith(ERASE)  # erased: the step line follows

"""Logs: to a file always, on the screen only when asked (`lfm -v`), so a person sees one line per step.

A verb prints what a person reads (one line per step, results); the log, with timestamps and the
`run_id=... ds=... step=...` fields, goes to the config's log file (`LfmConfig.log_dir`, `lfm.log` in it) and
to stderr only with `-v` (`-vv` adds debug records). Warnings and errors reach the screen either way. With
`--log-json` (or LFM_LOG_JSON=1) each record is one JSON object per line, its fields top-level keys, so a log
pipeline can filter by run id without parsing text.
"""
from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import re
from collections.abc import Iterator
from pathlib import Path

_FIELD = re.compile(r"(\w+)=(\S+)")
LOG_FILE = "lfm.log"  # in the log folder; rotated at LOG_FILE_BYTES into lfm.log.1 .. lfm.log.<LOG_FILE_BACKUPS>
LOG_FILE_BYTES = 20 * 1024 * 1024
LOG_FILE_BACKUPS = 5
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 **dict(_FIELD.findall(message)), "message": message}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _json_lines(json_lines: bool | None) -> bool:
    return os.environ.get("LFM_LOG_JSON", "") not in ("", "0") if json_lines is None else json_lines


def _formatter(json_lines: bool | None) -> logging.Formatter:
    return JsonFormatter() if _json_lines(json_lines) else logging.Formatter(_TEXT)


def setup_logging(verbose: int = 0, json_lines: bool | None = None) -> None:
    """The screen's share of the log: warnings and errors, every record with `verbose` >= 1 (debug from 2)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_formatter(json_lines))
    handler.setLevel(logging.NOTSET if verbose else logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    # GE logs every decorator it registers at INFO; faiss logs each CPU-specific build it tries (and the
    # ModuleNotFoundError of those this CPU lacks) before loading the generic one; Feast's file registry (the one on
    # an object store) logs every refresh of its cached copy
    for noisy in ("py4j", "great_expectations", "faiss", "feast.infra.registry.registry", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # "building the font cache" on a first run


@contextlib.contextmanager
def log_to_file(folder: Path, json_lines: bool | None = None) -> Iterator[Path | None]:
    """Every record the root logger passes also goes to `folder/lfm.log` (appended, rotated) while the block runs;
    yields the file, or None (after a warning on the screen) when the folder cannot be written."""
    path = folder / LOG_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS,
                                                       encoding="utf-8")
    except OSError as err:
        logging.getLogger("lfm.logs").warning("cannot write the log file %s (%s): logging to the screen only; set "
                                              "`logs:` in lfm.yaml to a writable folder", path, err)
        yield None
        return
    handler.setFormatter(_formatter(json_lines))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()

"""Structured logs: one JSON object per line (`--log-json` or LFM_LOG_JSON=1), else readable key=value lines.

Jobs log `run_id=... ds=... step=...` fields in their messages; the JSON form adds them as top-level keys so a
log pipeline can filter by run id without parsing text.
"""
from __future__ import annotations

import json
import logging
import os
import re

_FIELD = re.compile(r"(\w+)=(\S+)")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 **dict(_FIELD.findall(message)), "message": message}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(verbose: bool = False, json_lines: bool | None = None) -> None:
    if json_lines is None:
        json_lines = os.environ.get("LFM_LOG_JSON", "") not in ("", "0")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # GE logs every decorator it registers at INFO; faiss logs each CPU-specific build it tries (and the
    # ModuleNotFoundError of those this CPU lacks) before loading the generic one; Feast's file registry (the one on
    # an object store) logs every refresh of its cached copy
    for noisy in ("py4j", "great_expectations", "faiss", "feast.infra.registry.registry", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # "building the font cache" on a first run

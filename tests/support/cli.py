"""`lfm ...` run in the test's own process (sharing its SparkSession), with output and logs captured."""
from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass

from cli.main import main


@dataclass
class Cli:
    code: int
    out: str
    err: str

    @property
    def json_logs(self) -> list[dict]:
        return [json.loads(x) for x in self.err.splitlines() if x.startswith("{")]


def cli(*argv: str) -> Cli:
    """`lfm argv` in this process (sharing the test session's Spark), with its output and logs captured."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exit_:  # argparse refusals
                code = int(exit_.code or 0)
    finally:
        root.handlers[:], root.level = handlers, level  # main() installed its own handler on stderr
    return Cli(code, out.getvalue(), err.getvalue())

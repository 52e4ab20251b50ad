"""`lfm`: one console script, thin verbs over the packages.

Each module in `cli.verbs` registers its verbs; a verb parses arguments, loads the config and calls one
function of a package. User-fixable failures (`LfmError`) print one line and exit 2. The log goes to the config's
log folder (`lfm.log`, see `lfm.logs`), and to the screen as well with -v.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import cli.verbs
from lfm.config import load_config
from lfm.errors import LfmError
from lfm.logs import log_to_file, setup_logging

log = logging.getLogger("lfm.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lfm", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (default: $LFM_CONFIG, ./lfm.yaml, embedded default)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="the log on the screen too (it always goes to lfm.log in the `logs:` folder, default "
                        "./data/logs beside the config); -vv adds debug records")
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines (or LFM_LOG_JSON=1)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for info in sorted(pkgutil.iter_modules(cli.verbs.__path__), key=lambda m: m.name):
        importlib.import_module(f"cli.verbs.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.log_json)
    try:
        cfg = load_config(args.config)
        folder = cfg.log_dir()
    except LfmError as err:
        return _refused(args.verb, err)
    with log_to_file(folder, args.log_json):
        try:
            return int(args.run(args, cfg) or 0)
        except LfmError as err:
            log.info("lfm %s failed: %s", args.verb, err)  # the file keeps it beside the run's records
            return _refused(args.verb, err)


def _refused(verb: str, err: LfmError) -> int:
    print(f"lfm {verb}: error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

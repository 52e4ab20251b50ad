"""The transfer report, one command: `python -m bench.transfer_report` (`--help` lists the subsets).

A thin entry: the study lives in the `bench/transfer/` package (`bench.transfer.report` runs it end to end; the
package docstring there names each module's job); `docs/transfer_report.md` is its output.
"""
from __future__ import annotations

import sys

from bench.transfer.report import main

if __name__ == "__main__":
    sys.exit(main())

"""What write-audit-publish adds to one daily run: the record-table bookkeeping, timed on a lakehouse with history.

Per day the pipeline appends a candidate, withdraws a superseded release (on a rerun), records four verdicts,
reads them back with the candidate to publish, appends the release, and every reader looks the release up
(materialize, the training-set join, the ANN index). All of it goes through delta-rs on the small record tables
(`lakehouse.records`); the exported tables themselves are read at the released versions, which costs a Delta
snapshot load like reading the latest version does.

    python -m bench.release_overhead --history 30 365 --repeat 5

prints, for each amount of history (days of records already in the tables), the median seconds of each
operation and of one day's whole bookkeeping. Writes under bench/out/ only.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import time
from pathlib import Path

from lfm.config import config_from_dict
from lfm.contract import EMBEDDING_TABLES, EXPORT_TABLES, ExportSpec

SPEC = ExportSpec("be7c4a11d0e5f00d1234", cr_layer="dnn2", ur_dim=64, ir_dim=64, cr_dim=64, tau_hours=72.0,
                  normalisation="layernorm", state_ttl_days=None, schema_hash="0" * 16)
START = dt.date(2021, 1, 1)


def one_day(cfg, day: dt.date, rerun: bool) -> dict[str, float]:
    """The bookkeeping of one daily run of `day`, each operation timed."""
    from lakehouse import candidates, releases
    from validation import status

    versions = {t: day.toordinal() % 1000 for t in EXPORT_TABLES}
    times: dict[str, float] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t0
        return out

    cand = candidates.Candidate(ds=day, spec=SPEC, run_id=f"r{day:%Y%m%d}", table_versions=versions)
    timed("append candidate", lambda: candidates.append(cfg, cand))
    if rerun:
        timed("withdraw superseded release", lambda: releases.release_of(cfg, day, SPEC.id) and releases.withdraw(
            cfg, day, SPEC, cand.run_id, "bench rerun"))
    now = dt.datetime.now(dt.timezone.utc)
    rows = [status.StatusRow(ds=day, table=t, export_id=SPEC.id, model_version=SPEC.model_version,
                             table_version=versions[t], refresh_run_id=cand.run_id, run_id="g", passed=True,
                             failed_expectations=[], checked_at=now, metrics={"rows": 1.0}) for t in EMBEDDING_TABLES]
    timed("record 4 verdicts", lambda: status.record(cfg, rows))
    timed("publish: newest candidate + verdicts", lambda: (candidates.latest(cfg, day, SPEC.id),
                                                          status.verdicts(cfg, day, SPEC.id)))
    timed("publish: append release", lambda: releases.publish(cfg, day, SPEC, cand.run_id, "g", versions))
    timed("reader: release lookup", lambda: releases.release_of(cfg, day, SPEC.id))
    timed("reader: released days of the export", lambda: releases.released(cfg, SPEC.id))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[30, 365], help="days already recorded")
    parser.add_argument("--repeat", type=int, default=5, help="measured days per history size (medians)")
    args = parser.parse_args(argv)
    out = Path(__file__).resolve().parent / "out" / "release_overhead"
    print(f"{'history':>8}  {'operation':<40} {'median s':>9}")
    for history in args.history:
        shutil.rmtree(out, ignore_errors=True)
        cfg = config_from_dict({"lakehouse": str(out / "lakehouse")}, "<bench>", str(out))
        for i in range(history):
            one_day(cfg, START + dt.timedelta(days=i), rerun=False)
        runs = [one_day(cfg, START + dt.timedelta(days=history + i), rerun=False) for i in range(args.repeat)]
        reruns = [one_day(cfg, START + dt.timedelta(days=history + i), rerun=True) for i in range(args.repeat)]
        for name in reruns[0]:
            values = [r[name] for r in (reruns if name.startswith("withdraw") else runs)]
            print(f"{history:>8}  {name:<40} {statistics.median(values):>9.3f}")
        print(f"{history:>8}  {'one day, all of it (first run)':<40} {statistics.median(sum(r.values()) for r in runs):>9.3f}")
        print(f"{history:>8}  {'one day, all of it (a rerun)':<40} {statistics.median(sum(r.values()) for r in reruns):>9.3f}")
    shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

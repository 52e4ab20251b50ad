"""Where one day of one export stands, read from its records: what `run-daily` resumes from and `lfm status` tells.

The candidate (`refresh_log`), the verdicts (`gate_status`), the release (`releases`) and the online receipt
(`serving.receipts`: the release materialize loaded) decide whether each step is done, whoever wrote them
(`run-daily`, `lfm refresh`, `lfm validate`, `lfm materialize`): a day rewritten since its release, a kill during
the gate or a `refresh --no-gate` leaves a candidate without a release, and the plain rerun gates it again.
Step attempts (`runs`) are history, except for ingest: its record (`ingest_log`: what the day holds, and whether it
had no events at all) says nothing of which drop a run took. Everything is read with delta-rs and local files:
deciding that a finished day has nothing to do starts no Spark.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from lakehouse import candidates, ingests, releases
from lakehouse.candidates import Candidate
from lakehouse.releases import Release
from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES
from pipeline import runs
from serving import receipts
from serving.receipts import Receipt
from validation.status import StatusRow, verdicts

STEP_NAMES = ("ingest", "refresh", "withdraw", "validate", "publish", "materialize")
UPDATE = "update"  # a lineage export's daily update between ingest and refresh (`pipeline.lineage`): no record of
# its own beyond the version it registers, so its attempts in `runs` tell it


def unpassed(candidate: Candidate, found: dict[str, StatusRow]) -> list[str]:
    """The embedding tables whose newest verdict did not pass at exactly the candidate's version."""
    return [t for t in EMBEDDING_TABLES
            if not (t in found and found[t].passed and found[t].table_version == candidate.table_versions.get(t))]


@dataclass(frozen=True)
class DayState:
    ds: dt.date
    export_id: str
    ingested: bool  # the day's events are in (`ingested`)
    candidate: Candidate | None  # the newest complete refresh of (ds, export)
    verdicts: dict[str, StatusRow]  # the newest verdict per embedding table of (ds, export)
    release: Release | None  # the newest `releases` row of (ds, export): released or withdrawn
    online: Receipt | None  # the release the online store holds for the day
    empty: bool = False  # ingest recorded the day as one with no events (`lakehouse.ingests`): released as any day

    @property
    def gated(self) -> bool:
        """Every embedding table passed at exactly the candidate's versions."""
        return self.candidate is not None and not unpassed(self.candidate, self.verdicts)

    @property
    def quarantined(self) -> list[str]:
        """Tables whose verdict at the candidate's version failed."""
        c = self.candidate
        return [] if c is None else [t for t, v in sorted(self.verdicts.items())
                                     if not v.passed and v.table_version == c.table_versions.get(t)]

    @property
    def released(self) -> bool:
        """The newest release row is a release of exactly the newest candidate."""
        r, c = self.release, self.candidate
        return (r is not None and c is not None and r.released and r.run_id == c.run_id
                and r.table_versions == c.table_versions)

    @property
    def online_current(self) -> bool:
        """The online store holds the release of the newest candidate."""
        return self.released and self.online is not None and self.online.names(self.release)

    @property
    def stale_online(self) -> bool:
        """The online store holds a release of the day that is no longer current (withdrawn or superseded): the
        same rule `serving.materialize.withdraw` applies."""
        return self.online is not None and not self.online.names(self.release)

    def done(self, step: str) -> bool:
        return DONE[step](self)

    @property
    def next_step(self) -> str | None:
        """Where a plain `lfm run-daily` of the day resumes; None when the day is complete."""
        return next((s for s in STEP_NAMES if not self.done(s)), None)

    def story(self) -> str:
        """One line: candidate -> gate -> release -> online -> what the plain rerun does."""
        c = self.candidate
        if c is None:
            parts = ["no candidate" + (" (ingested)" if self.ingested else "")]
        else:
            gate = ("gate passed" if self.gated else f"QUARANTINED {', '.join(self.quarantined)}"
                    if self.quarantined else "not gated")
            parts = [f"candidate {c.run_id}", gate, self._release_text()]
        parts.append("online" if self.online_current else "WITHDRAWN RELEASE STILL ONLINE" if self.stale_online
                     else "not online")
        step = self.next_step
        parts.append(f"next: run-daily resumes at {step}" if step else "complete")
        if self.empty:
            parts.insert(0, "no events (an empty day: CR carried from the day before, decayed)")
        return ", ".join(parts)

    def _release_text(self) -> str:
        if self.released:
            return "RELEASED"
        if self.release is not None and not self.release.released:
            return f"WITHDRAWN ({self.release.reason})"
        return "not released"


DONE: dict[str, Callable[[DayState], bool]] = {
    "ingest": lambda s: s.ingested,
    "refresh": lambda s: s.candidate is not None,
    "withdraw": lambda s: not s.stale_online,
    "validate": lambda s: s.gated,
    "publish": lambda s: s.released,
    "materialize": lambda s: s.online_current,
}


def ingested(cfg: LfmConfig, ds: dt.date) -> bool:
    """Ingest is of the day, not of an export, and done for a run when its latest attempt succeeded or a refresh of
    the day (any export) read its events (an `lfm ingest` alone leaves `run-daily --source` its own ingest). Needs
    no export, so a day is ingested before a model exists."""
    last = runs.latest_by_step(cfg, ds).get("ingest")
    return (last is not None and last.status == "succeeded") or bool(candidates.latest_per_export(cfg, [ds]))


def day_state(cfg: LfmConfig, ds: dt.date, export_id: str) -> DayState:
    """The records of (ds, export) now."""
    newest = releases.latest(cfg, export_id, [ds])
    return DayState(ds, export_id, ingested(cfg, ds), candidates.latest(cfg, ds, export_id),
                    verdicts(cfg, ds, export_id),
                    newest[0] if newest else None, receipts.read(cfg, export_id, ds), ingests.recorded_empty(cfg, ds))

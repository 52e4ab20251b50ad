"""Wall time per phase, kept in the workdir so a resumed report still states what the whole study cost."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("lfm.transfer_report")


class Timer:
    """Phases in order, each the running total of its time; saved after every phase."""

    def __init__(self, path: Path, resume: bool = False):
        self.path = path
        self.phases: dict[str, float] = {}
        self.earlier = 0.0  # wall time of earlier invocations of a resumed report
        if resume and path.exists():
            saved = json.loads(path.read_text())
            self.phases, self.earlier = dict(saved["phases"]), float(saved["total_s"])
        self.resumed = self.earlier > 0
        self.t0 = time.perf_counter()

    @property
    def total(self) -> float:
        return self.earlier + time.perf_counter() - self.t0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        log.info("[%s] ...", name)
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t
            log.info("[%s] %.1fs (%.1f min in all so far)", name, self.phases[name], self.total / 60)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"phases": self.phases, "total_s": self.total}))

"""Resident memory and CPU of a benchmarked process tree, split into the driver, the Spark JVM and its Python
workers, sampled on a thread while the command runs."""
from __future__ import annotations

import dataclasses
import threading
import time

GIB = 2**30


@dataclasses.dataclass
class Sample:
    t: float  # wall clock (time.time())
    driver: int  # bytes resident: the `lfm` process (and any non-Spark children)
    jvm: int
    workers: int  # the JVM's Python children (PySpark daemon and workers)

    @property
    def total(self) -> int:
        return self.driver + self.jvm + self.workers


class TreeSampler:
    """RSS of a process tree every `every` seconds, split into driver / JVM / Python workers."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.every = every
        self.samples: list[Sample] = []
        self.cpu: dict[int, float] = {}  # pid -> its CPU seconds when last seen (the JVM, workers included)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self) -> Sample:
        import psutil

        driver = jvm = workers = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            procs = []
        java = {p.pid for p in procs if _name(p) == "java"}
        for p in procs:
            try:
                times = p.cpu_times()
                self.cpu[p.pid] = times.user + times.system
                rss = p.memory_info().rss
                if p.pid in java:
                    jvm += rss
                elif any(a.pid in java for a in p.parents()):
                    workers += rss
                else:
                    driver += rss
            except psutil.Error:  # a worker that just exited
                continue
        return Sample(time.time(), driver, jvm, workers)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._one())
            self._stop.wait(self.every)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float | None = None, end: float | None = None) -> dict[str, float]:
        """Peak GiB per class and of the total, over the samples in [start, end]."""
        inside = [s for s in self.samples if (start is None or s.t >= start) and (end is None or s.t <= end)]
        if not inside:
            return {"driver": 0.0, "jvm": 0.0, "workers": 0.0, "total": 0.0}
        return {k: max(getattr(s, k) for s in inside) / GIB for k in ("driver", "jvm", "workers", "total")}


def _name(p) -> str:
    try:
        return p.name()
    except Exception:  # noqa: BLE001 - gone
        return ""

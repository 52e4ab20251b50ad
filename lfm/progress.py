"""A long step's sign of life: on a terminal, its line shows the seconds so far, redrawn in place.

A step prints one line when it ends (`pipeline.daily`, `pipeline.demo`); while it runs, `ticking(label)` redraws
`label 12s ...` every second on stdout and erases it at the end, so the finished line takes its place. Off when
stdout is not a terminal (a pipe, a file, CI, the tests): nothing is written then.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

ERASE = "\r\033[K"  # carriage return, then clear to the end of the line


@contextlib.contextmanager
def ticking(label: str, every: float = 1.0, stream: TextIO | None = None) -> Iterator[None]:
    """While the block runs, `label <seconds>s ...` on `stream` (default stdout) if it is a terminal."""
    out = stream if stream is not None else sys.stdout
    if not _is_tty(out):
        yield
        return
    stop = threading.Event()
    t0 = time.perf_counter()

    def draw() -> None:
        while not stop.wait(every):
            out.write(f"{ERASE}{label} {time.perf_counter() - t0:.0f}s ...")
            out.flush()

    thread = threading.Thread(target=draw, name="lfm-ticker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        out.write(ERASE)
        out.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False

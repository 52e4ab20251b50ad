"""The one way training code seeds torch."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int, threads: int, *, deterministic_algorithms: bool = False) -> Iterator[None]:
    """Seeded torch on a fixed thread count; the previous global settings come back after.

    The CPU kernels the models use are deterministic, so a seed and a thread count already give bit-identical
    runs. `deterministic_algorithms` also turns on torch's guard against non-deterministic kernels; pretraining
    uses it, the downstream trainer does not (it slows the embedding backward pass by about a third on CPU and
    guards only CUDA kernels).
    """
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    if deterministic_algorithms:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        if deterministic_algorithms:
            torch.use_deterministic_algorithms(old_det[0], warn_only=old_det[1])

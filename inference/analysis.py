"""Collapse analysis of an embedding matrix (docs/domain.md section 4): singular spectrum, IA, effective rank.

Used by the quality gate on samples of each day's exported vectors, and by people comparing model versions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


@dataclass(frozen=True)
class Spectrum:
    singular_values: np.ndarray  # normalised by the largest, descending
    information_abundance: float  # sum(s) / max(s): 1 for rank 1, dim for an isotropic cloud
    effective_rank: float  # exp(entropy of s / sum(s))


def singular_spectrum(matrix: np.ndarray) -> np.ndarray:
    """Singular values of the row-L2-normalised matrix, divided by the largest (all-zero rows are dropped)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"need a non-empty 2-d matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("matrix holds NaN or infinite values; the spectrum is undefined")
    norms = np.linalg.norm(m, axis=1)
    m = m[norms > _EPS] / norms[norms > _EPS, None]
    if m.shape[0] == 0:
        return np.zeros(1)
    s = np.linalg.svd(m, compute_uv=False)
    return s / s[0] if s[0] > _EPS else np.zeros_like(s)


def analyse(matrix: np.ndarray) -> Spectrum:
    s = singular_spectrum(matrix)
    total = s.sum()
    p = s[s > 0] / total if total > 0 else np.ones(1)
    return Spectrum(singular_values=s, information_abundance=float(total / s.max()) if s.max() > 0 else 0.0,
                    effective_rank=float(np.exp(-(p * np.log(p)).sum())) if total > 0 else 0.0)


def information_abundance(matrix: np.ndarray) -> float:
    return analyse(matrix).information_abundance


def effective_rank(matrix: np.ndarray) -> float:
    return analyse(matrix).effective_rank

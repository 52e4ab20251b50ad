"""Feast's online byte layouts as plain bytes and numpy, importable without Feast (Spark tasks import this).

The prefixes are never written by hand: `serving.codec` takes them from Feast's own serializers on the driver and
checks a sample against Feast, then hands these picklable layouts to the tasks, which apply them in bulk.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ValueLayout:
    """A `ValueProto(float_list_val=...)` of `dim` floats: `prefix` then the packed little-endian float32s."""

    prefix: bytes
    dim: int

    def encode(self, mat: np.ndarray) -> list[bytes]:
        """One serialized value per row of a (n, dim) matrix."""
        mat = np.ascontiguousarray(mat, dtype="<f4")
        n = mat.shape[0]
        width = len(self.prefix) + 4 * self.dim
        buf = np.empty((n, width), dtype=np.uint8)
        buf[:, : len(self.prefix)] = np.frombuffer(self.prefix, dtype=np.uint8)
        buf[:, len(self.prefix):] = mat.view(np.uint8).reshape(n, 4 * self.dim)
        blob = buf.tobytes()
        return [blob[i * width:(i + 1) * width] for i in range(n)]


@dataclass(frozen=True)
class KeyLayout:
    """A serialized one-column entity key: `prefix`, then the id (INT64: 8 bytes; STRING: length, UTF-8)."""

    prefix: bytes
    int64: bool

    def encode(self, ids) -> list[bytes]:
        if self.int64:
            raw = np.asarray(ids, dtype="<i8").tobytes()
            return [self.prefix + raw[8 * i: 8 * i + 8] for i in range(len(raw) // 8)]
        out = []
        for i in ids:
            b = str(i).encode("utf-8")
            out.append(self.prefix + struct.pack("<I", len(b)) + b)
        return out

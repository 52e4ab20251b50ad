"""The map side of the CR aggregation (inference.kernels.KeySums): per-task sums per key equal the reference
group sum of `inference.decay`, for input in any order (compacted) and sorted by key (handed on as keys complete),
and a rerun over the same batches gives the same bits."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from inference import decay
from inference.kernels import KeySums, group_codes, partial_sums


def batches(keys: np.ndarray, vecs: np.ndarray, t_ms: np.ndarray, rows: int):
    for start in range(0, len(keys), rows):
        sl = slice(start, start + rows)
        codes, uniques = group_codes(pa.array(keys[sl]))
        yield partial_sums(codes, uniques, vecs[sl], None, t_ms[sl])


def run(acc: KeySums, parts) -> dict[int, tuple[np.ndarray, int]]:
    out: dict[int, tuple[np.ndarray, int]] = {}
    done = [acc.add(p) for p in parts] + [acc.drain()]
    for found in done:
        if found is None:
            continue
        keys, sums, last = found
        for k, s, t in zip(keys.to_pylist(), sums, last):
            assert k not in out, f"key {k} handed on twice"
            out[k] = (s, int(t))
    return out


@pytest.mark.parametrize("sort", [False, True])
def test_sums_per_key_match_the_reference_in_any_order(sort):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 300, 5000)
    if sort:
        keys = np.sort(keys)
    vecs = rng.normal(size=(5000, 6)).astype(np.float32)
    t_ms = rng.integers(0, 10**6, 5000)
    got = run(KeySums(sorted_keys=sort, min_rows=100), batches(keys, vecs, t_ms, 64))
    ref_keys, ref_sums = decay.group_sum(keys, vecs)
    assert sorted(got) == ref_keys.tolist()
    np.testing.assert_allclose(np.stack([got[k][0] for k in ref_keys.tolist()]), ref_sums, rtol=1e-12, atol=1e-12)
    for k in ref_keys[:20].tolist():
        assert got[k][1] == t_ms[keys == k].max()
    again = run(KeySums(sorted_keys=sort, min_rows=100), batches(keys, vecs, t_ms, 64))
    assert all(np.array_equal(got[k][0], again[k][0]) for k in got)  # bit-identical on a rerun


def test_sorted_input_holds_one_key_at_a_time():
    keys = np.repeat(np.arange(50), 7)  # every key spans a batch boundary somewhere
    acc = KeySums(sorted_keys=True)
    held = []
    for part in batches(keys, np.ones((len(keys), 2), np.float32), np.zeros(len(keys), np.int64), 10):
        acc.add(part)
        held.append(acc.held)
    assert max(held) == 1
    keys_left, sums_left, _ = acc.drain()
    assert keys_left.to_pylist() == [49] and sums_left.tolist() == [[7.0, 7.0]]

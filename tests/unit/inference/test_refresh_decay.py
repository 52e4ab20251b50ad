"""The decay math against values computed by hand (no Spark)."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from inference import decay
from lfm.contract import day_end, day_end_ms

H = decay.MS_PER_HOUR


def test_day_end_is_next_local_midnight():
    # Asia/Shanghai is UTC+8 all year: 2022-05-02 ends at 2022-05-03 00:00 +08:00 = 05-02 16:00 UTC.
    assert day_end("2022-05-02", "Asia/Shanghai") == dt.datetime(2022, 5, 2, 16, tzinfo=dt.timezone.utc)
    utc_end = dt.datetime(2022, 5, 3, tzinfo=dt.timezone.utc)
    assert day_end_ms("2022-05-02", "UTC") == int(utc_end.timestamp()) * 1000


def test_day_end_follows_dst():
    # Europe/Berlin switched to summer time on 2022-03-27: that day has 23 hours.
    a = day_end_ms("2022-03-26", "Europe/Berlin")
    b = day_end_ms("2022-03-27", "Europe/Berlin")
    assert b - a == 23 * H


def test_sample_weights_by_hand():
    end = 100 * H
    w = decay.sample_weights(np.array([end - 10 * H, end - 1]), end, tau_hours=10.0)
    assert w[0] == pytest.approx(math.exp(-1.0))
    assert w[1] == pytest.approx(math.exp(-1 / (10 * H)))


def test_sample_at_day_end_is_refused():
    with pytest.raises(decay.FutureEvent, match="after the day end"):
        decay.sample_weights(np.array([0, 5 * H]), 5 * H, tau_hours=1.0)


def test_group_sum_weights_and_order():
    keys = np.array([2, 1, 2, 1])
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0], [1.0, 1.0]])
    w = np.array([0.5, 1.0, 2.0, 0.25])
    k, s = decay.group_sum(keys, vecs, w)
    assert k.tolist() == [1, 2]
    np.testing.assert_allclose(s, [[0.25, 1.25], [6.5, 6.0]])


def test_group_sum_is_independent_of_row_order_given_order_column():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 5, 200)
    vecs = rng.normal(size=(200, 3)) * 10.0 ** rng.integers(-8, 8, (200, 1))
    order = np.arange(200)
    k1, s1 = decay.group_sum(keys, vecs, order=order)
    p = rng.permutation(200)
    k2, s2 = decay.group_sum(keys[p], vecs[p], order=order[p])
    assert k1.tolist() == k2.tolist()
    assert np.array_equal(s1, s2)  # bit-identical, not just close


def test_decay_step_by_hand():
    # tau = 24h, days end 24h apart: yesterday's state is carried with exp(-1).
    t_prev, t_now = 24 * H, 48 * H
    prev_keys, prev_state = np.array([1, 2]), np.array([[1.0, 2.0], [4.0, 0.0]])
    # today: key 2 has one sample 12h before the day end with CR (2, 2); key 3 is new with CR (1, 1) at the end-1ms
    w = decay.sample_weights(np.array([t_now - 12 * H, t_now - 1]), t_now, 24.0)
    day_keys, day_sums = decay.group_sum(np.array([2, 3]), np.array([[2.0, 2.0], [1.0, 1.0]]), w)
    keys, state = decay.decay_step(prev_keys, prev_state, t_prev, day_keys, day_sums, t_now, 24.0)
    e1, eh = math.exp(-1), math.exp(-0.5)
    assert keys.tolist() == [1, 2, 3]
    np.testing.assert_allclose(state[0], [e1 * 1, e1 * 2])  # no events: decays only
    np.testing.assert_allclose(state[1], [e1 * 4 + eh * 2, eh * 2])
    np.testing.assert_allclose(state[2], [math.exp(-1 / (24 * H)), math.exp(-1 / (24 * H))])


def test_two_steps_equal_one_step_over_both_days():
    """The state at T_D does not depend on where the day boundaries fall: the decay is wall-clock."""
    tau = 30.0
    t = np.array([1 * H, 5 * H, 30 * H, 47 * H])
    cr = np.array([[1.0], [2.0], [3.0], [4.0]])
    keys = np.zeros(4, dtype=np.int64)
    k1, s1 = decay.group_sum(keys[:2], cr[:2], decay.sample_weights(t[:2], 24 * H, tau))
    k2, d2 = decay.group_sum(keys[2:], cr[2:], decay.sample_weights(t[2:], 48 * H, tau))
    _, s2 = decay.decay_step(k1, s1, 24 * H, k2, d2, 48 * H, tau)
    direct = (np.exp(-(48 * H - t) / (tau * H))[:, None] * cr).sum(0)
    np.testing.assert_allclose(s2[0], direct)


def test_cold_start_is_the_day_sums():
    keys, state = decay.decay_step(np.array([]), np.zeros((0, 2)), None, np.array([7]), np.array([[1.0, 2.0]]), 10, 1.0)
    assert keys.tolist() == [7] and state.tolist() == [[1.0, 2.0]]


def test_previous_state_newer_than_day_is_refused():
    with pytest.raises(decay.BadInput, match="in order"):
        decay.carry_factor(48 * H, 24 * H, 1.0)


def test_segment_sum_with_scale_and_order():
    offsets = np.array([0, 2, 5])
    v = np.array([[1.0], [2.0], [10.0], [20.0], [30.0]])
    out = decay.segment_sum(offsets, v, scale=np.array([0.5, 1, 1, 1, 0.1]), order=np.array([1, 0, 2, 1, 0]))
    np.testing.assert_allclose(out, [[2.5], [33.0]])


def test_normalisations_by_hand():
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    ln = decay.normalise(x, "layernorm")
    sd = math.sqrt(2 / 3 + decay.LAYERNORM_EPS)
    np.testing.assert_allclose(ln[0], [-1 / sd, 0, 1 / sd], rtol=1e-6)
    assert ln.dtype == np.float32 and np.all(ln[1] == 0)
    l2 = decay.normalise(x, "l2")
    np.testing.assert_allclose(l2[0], np.array([1, 2, 3]) / math.sqrt(14), rtol=1e-6)
    assert np.all(l2[1] == 0)
    np.testing.assert_array_equal(decay.normalise(x, "none"), x.astype(np.float32))
    with pytest.raises(decay.BadInput):
        decay.normalise(x, "zscore")


def test_layernorm_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(5, 8))
    ref = torch.nn.functional.layer_norm(torch.tensor(x), (8,), eps=decay.LAYERNORM_EPS).numpy()
    np.testing.assert_allclose(decay.normalise(x, "layernorm"), ref, rtol=1e-5, atol=1e-6)


def test_arrow_vector_roundtrip():
    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    arr = decay.matrix_to_list(m)
    assert arr.type == pa.list_(pa.float32())
    np.testing.assert_array_equal(decay.list_to_matrix(arr, np.float32), m)
    np.testing.assert_array_equal(decay.list_to_matrix(arr.slice(1, 2), np.float32), m[1:3])
    ragged = pa.array([[1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="different lengths"):
        decay.list_to_matrix(ragged)

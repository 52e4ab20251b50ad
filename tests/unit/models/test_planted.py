"""The planted frames themselves: deterministic and learnable."""
from __future__ import annotations

import pandas as pd

from tests.support.planted import planted_frames


def test_planted_frames_are_deterministic_and_learnable():
    a, b = planted_frames(seed=3), planted_frames(seed=3)
    pd.testing.assert_frame_equal(a.train.drop(columns=["ur", "ir", "cr_user", "cr_item"]),
                                  b.train.drop(columns=["ur", "ir", "cr_user", "cr_item"]))
    assert 0.2 < a.train.is_click.mean() < 0.8
    assert a.train.event_timestamp.max() < a.test.event_timestamp.min()

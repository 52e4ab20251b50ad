"""Retrieval quality of a two-tower: recall@K of the test positives over every item seen so far."""
from __future__ import annotations

import numpy as np
import torch

from models.downstream import Batch
from models.two_tower import TwoTower, recall_at_k


@torch.no_grad()
def retrieval_recall(model: TwoTower, seen: Batch, test: Batch, ks: tuple[int, ...]) -> dict[int, float]:
    """recall@K of the test positives; candidates are all items of `seen` (rows in time order), each with the
    vector of its latest row (for the frozen-IR tower: the newest IR snapshot)."""
    model.eval()
    keys = seen.item_keys.numpy()
    _, first_in_reversed = np.unique(keys[::-1], return_index=True)
    latest = np.sort(len(keys) - 1 - first_in_reversed)  # row of each item's last occurrence
    candidates = seen.take(torch.from_numpy(latest))
    row_of = {int(k): i for i, k in enumerate(keys[latest])}
    positives = torch.nonzero(test.labels > 0).squeeze(1)
    if len(positives) == 0:
        return {}
    target = torch.tensor([row_of.get(int(k), -1) for k in test.item_keys[positives]], dtype=torch.long)
    users = model.user_vectors(test.take(positives))
    items = model.item_vectors(candidates)
    return {k: recall_at_k(users, target, items, k) for k in ks}

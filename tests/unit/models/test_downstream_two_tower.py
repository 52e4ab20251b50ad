"""The standalone retrieval two-tower: frozen IR item side, trained user projection, recall@K."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.adapters import Representation
from lfm.config.downstream import TrainerSettings, TwoTowerSettings
from models.downstream import Batch, DownstreamSizes
from models.training.setup import DownstreamSetup
from models.training.transfer import run_transfer
from models.training.variants import TransferRequest, TransferVariant
from models.two_tower import (FrozenIrTwoTower, ProjectionCard, UserSource, load_user_projection, recall_at_k,
                              save_user_projection)
from tests.support.planted import VECTOR_DIM, planted_frames

SETTINGS = DownstreamSetup(
    sizes=DownstreamSizes(embedding_dim=4, cross_layers=1, dnn=(8,), adapter_hidden=(8,)),
    trainer=TrainerSettings(batch_size=256, max_epochs=60, patience=2, threads=1, lr=3e-3),
    retrieval=TwoTowerSettings(hidden=(16,), scratch_dim=VECTOR_DIM, recall_k=(5, 20)),
)


@pytest.fixture(scope="module")
def planted():
    return planted_frames(rows=4000, test_rows=1200, users=60, items=60, bias=0.3)


def test_recall_at_k_counts_positives_in_the_top_k():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    items = torch.tensor([[3.0, 0.0], [2.0, 0.1], [0.0, 2.0], [0.1, 0.1]])
    # scores: user 0 -> [3, 2, 0, .1]; user 1 -> [0, .1, 2, .1]; user 2 -> [3, 2.1, 2, .2]
    positive = torch.tensor([1, 2, 2])  # ranks: 2, 1, 3
    assert recall_at_k(users, positive, items, 1) == pytest.approx(1 / 3)
    assert recall_at_k(users, positive, items, 2) == pytest.approx(2 / 3)
    assert recall_at_k(users, positive, items, 3) == pytest.approx(1.0)
    assert recall_at_k(users, torch.tensor([1, -1, 2]), items, 4) == pytest.approx(2 / 3)  # -1: not a candidate
    tie = torch.tensor([[1.0, 0.0]])
    assert recall_at_k(tie, torch.tensor([1]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), 1) == 0.0  # ties lose
    with pytest.raises(ValueError):
        recall_at_k(users, positive, items, 0)


def test_ir_side_is_frozen_and_only_the_user_projection_trains():
    model = FrozenIrTwoTower(UserSource.ur, in_dim=5, ir_dim=3, hidden=(4,))
    ir = torch.randn(8, 3, requires_grad=True)
    batch = Batch(fields=torch.zeros(8, 0, dtype=torch.long), labels=torch.ones(8),
                  vectors={"ur": torch.randn(8, 5), "ir": ir})
    score = model(batch)
    assert torch.allclose(score, (model.user(batch.vectors["ur"]) * ir).sum(-1) + model.bias)
    names = {n for n, _ in model.named_parameters()}
    assert all(n.startswith("user.") or n == "bias" for n in names)  # no item-side parameter exists
    with pytest.raises(ValueError):
        FrozenIrTwoTower(UserSource.scratch, 5, 3, ())


@pytest.mark.parametrize("variant", [TransferVariant.retrieval_ur, TransferVariant.retrieval_cr_user,
                                     TransferVariant.retrieval_scratch])
def test_two_towers_learn_the_planted_clicks(planted, variant):
    r = run_transfer(planted.train, planted.test, "is_click", TransferRequest(variant), planted.schema, SETTINGS,
                     seed=0)
    assert r.test_auc > 0.55
    assert set(r.recall) == {5, 20} and 0 <= r.recall[5] <= r.recall[20] <= 1
    if variant is TransferVariant.retrieval_ur:  # UR and IR share the planted factor space
        assert r.test_auc > 0.75
        assert r.recall[5] > 5 / 60 * 1.5  # well above a random ranking of 60 items


def test_saved_projection_serves_the_same_vectors(planted, tmp_path):
    r = run_transfer(planted.train, planted.test, "is_click", TransferRequest(TransferVariant.retrieval_ur),
                     planted.schema, SETTINGS, seed=0, keep_model=True)
    card = ProjectionCard(source="ur", in_dim=VECTOR_DIM, out_dim=VECTOR_DIM, hidden=SETTINGS.retrieval.hidden,
                          model_version="ab" * 10, scenario="0", task="is_click", metrics={"auc": r.test_auc})
    path = save_user_projection(tmp_path / "proj" / "retrieval_ur.pt", r.model, card)
    encoder = load_user_projection(path)
    loaded = encoder.card
    assert loaded == card and encoder.source == "ur"
    ur = np.stack(planted.test["ur"].to_numpy()[:10])
    with torch.no_grad():
        expected = r.model.user(torch.as_tensor(ur)).numpy()
    np.testing.assert_allclose(encoder.encode(ur), expected, rtol=1e-6)
    assert path.with_suffix(".json").is_file()
    assert Representation(loaded.source) is Representation.ur

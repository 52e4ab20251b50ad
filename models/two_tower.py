"""Model-level transfer: the standalone retrieval two-tower.

Item side: the frozen IR of the item (never trained here). User side: a trained projection of the user's UR or
CR(user) into the IR space. Score: inner product (+ one scalar bias, which moves no ranking). In serving this is
an extra retrieval channel: `lfm retrieve` projects the user's vector with the saved projection and asks the ANN
index over IR for the nearest items. Its control is the same two-tower trained from scratch on id embeddings.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from models.adapters import Representation
from models.blocks import Mlp
from models.downstream import Batch

# Id embeddings of a dot-product model start near the saddle at zero: with the rankers' tiny init the control
# sits on a flat validation curve for epochs and early stopping ends it under-trained, which would flatter
# every transfer variant. A moderate init leaves the saddle in a few steps.
ID_EMBEDDING_INIT_STD = 0.1
RECALL_CHUNK_ROWS = 4096  # users scored against all candidates per step, bounds memory of the (P, N) score block


class UserSource(str, Enum):
    """What the user tower reads."""

    scratch = "scratch"  # control: a user id embedding (and the item side an item id embedding)
    ur = "ur"
    cr_user = "cr_user"

    @property
    def representation(self) -> Representation | None:
        return None if self is UserSource.scratch else Representation(self.value)


class UserProjection(nn.Module):
    """MLP from a user vector to the item space; `hidden=()` is a single linear map."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = Mlp(in_dim, hidden, out_dim)  # saved projections hold its weights under `net.`
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, tuple(hidden)

    def forward(self, x: Tensor) -> Tensor:  # (B, in_dim) -> (B, out_dim)
        return self.net(x)

    @torch.no_grad()
    def project(self, vectors: np.ndarray) -> np.ndarray:
        """numpy in, numpy out, for the retrieval service: (n, in_dim) float -> (n, out_dim) float32."""
        self.eval()
        return self(torch.as_tensor(np.asarray(vectors, dtype=np.float32))).numpy()


class FrozenIrTwoTower(nn.Module):
    """User tower: projection of UR or CR(user). Item tower: the row's IR as exported (frozen)."""

    def __init__(self, source: UserSource, in_dim: int, ir_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        if source.representation is None:
            raise ValueError("FrozenIrTwoTower reads a transferred user vector; use ScratchTwoTower for ids")
        self.source = source
        self.user = UserProjection(in_dim, ir_dim, hidden)
        self.bias = nn.Parameter(torch.zeros(()))

    def user_vectors(self, batch: Batch) -> Tensor:  # (B, ir_dim)
        return self.user(batch.vectors[self.source.value])

    def item_vectors(self, batch: Batch) -> Tensor:  # (B, ir_dim), no parameters: the IR stays frozen
        return batch.vectors[Representation.ir.value]

    def forward(self, batch: Batch) -> Tensor:  # (B,) logits
        return (self.user_vectors(batch) * self.item_vectors(batch)).sum(-1) + self.bias


class ScratchTwoTower(nn.Module):
    """The control: id embeddings on both sides, the same user projection, the same inner product."""

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.source = UserSource.scratch
        self.user_ids = nn.Embedding(n_users, dim)
        self.item_ids = nn.Embedding(n_items, dim)
        for t in (self.user_ids, self.item_ids):
            nn.init.normal_(t.weight, std=ID_EMBEDDING_INIT_STD)
        self.user = UserProjection(dim, dim, hidden)
        self.bias = nn.Parameter(torch.zeros(()))

    def user_vectors(self, batch: Batch) -> Tensor:  # (B, dim)
        return self.user(self.user_ids(batch.users))

    def item_vectors(self, batch: Batch) -> Tensor:  # (B, dim)
        return self.item_ids(batch.items)

    def forward(self, batch: Batch) -> Tensor:  # (B,) logits
        return (self.user_vectors(batch) * self.item_vectors(batch)).sum(-1) + self.bias


TwoTower = FrozenIrTwoTower | ScratchTwoTower


@torch.no_grad()
def recall_at_k(user_vectors: Tensor, positive: Tensor, candidates: Tensor, k: int) -> float:
    """Share of positive (user, item) pairs whose item is among the user's top-k candidates by inner product.

    user_vectors: (P, d), one row per positive pair; positive: (P,) row of the pair's item in `candidates`
    (-1 when the item is not a candidate: a miss); candidates: (N, d). Ties count against the positive.
    """
    if user_vectors.shape[0] == 0:
        raise ValueError("recall@K needs at least one positive pair")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits = 0
    for start in range(0, user_vectors.shape[0], RECALL_CHUNK_ROWS):
        u = user_vectors[start:start + RECALL_CHUNK_ROWS]
        pos = positive[start:start + RECALL_CHUNK_ROWS]
        scores = u @ candidates.T  # (p, N)
        known = pos >= 0
        own = scores.gather(1, pos.clamp(min=0).unsqueeze(1))  # (p, 1) the positive's own score
        rank = (scores >= own).sum(1)  # 1 = best; ties are ranked ahead of the positive
        hits += int(((rank <= k) & known).sum())
    return hits / user_vectors.shape[0]


@dataclass(frozen=True)
class ProjectionCard:
    """What a saved user projection needs to be used: which vector it reads, from which model version."""

    source: str  # "ur" or "cr_user": the Feast feature the projection reads
    in_dim: int
    out_dim: int
    hidden: tuple[int, ...]
    model_version: str  # the IR it was trained against; only that version's IR index is a valid target
    scenario: str
    task: str
    metrics: dict[str, float] = field(default_factory=dict)


def save_user_projection(path: str | Path, model: FrozenIrTwoTower, card: ProjectionCard) -> Path:
    """Write the projection's weights and card to `path` (.pt) plus a readable `path.json`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"card": {**asdict(card), "hidden": list(card.hidden)},
               "state_dict": {k: v.detach().clone() for k, v in model.user.state_dict().items()}}
    torch.save(payload, path)
    path.with_suffix(".json").write_text(json.dumps(payload["card"], indent=2, sort_keys=True))
    return path


@dataclass(frozen=True)
class ProjectionEncoder:
    """A saved user projection in the shape `serving.retrieval.Retriever` takes as its `encoder`:
    `source` names the online view to read (ur or cr_user), `encode` maps those vectors into the IR space."""

    projection: UserProjection
    card: ProjectionCard

    @property
    def source(self) -> str:
        return self.card.source

    def encode(self, vectors: np.ndarray) -> np.ndarray:  # (n, in_dim) -> (n, ir_dim) float32
        return self.projection.project(vectors)


def load_user_projection(path: str | Path) -> ProjectionEncoder:
    """The projection saved by `save_user_projection` (weights only: no code is unpickled)."""
    payload = torch.load(Path(path), weights_only=True)
    raw = payload["card"]
    card = ProjectionCard(**{**raw, "hidden": tuple(raw["hidden"])})
    projection = UserProjection(card.in_dim, card.out_dim, card.hidden)
    projection.load_state_dict(payload["state_dict"])
    projection.eval()
    return ProjectionEncoder(projection, card)


def projection_path(root: str | Path, model_version: str, source: UserSource, scenario: object, task: str) -> Path:
    """Where `lfm train-downstream` saves a retrieval user projection: one file per (version, source, scenario,
    task) under `root` (the platform passes `<registry>/downstream`)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{scenario}")
    return Path(root) / model_version / f"retrieval_{source.value}_{safe}_{task}.pt"

"""The downstream base ranker: one scenario's own fields -> DCNv2 cross layers -> DNN -> one logit.

Same family as the LFM's mixing tower (embedding stack, DCNv2 cross x_{l+1} = x_0 * (W x_l + b) + x_l, then a
DNN) with its own, smaller width, because a downstream team trains on one scenario's rows, not on all of them.
Transferred representations enter through a `TransferBlock` (models/adapters.py): gates multiply into the field
stack, concat adapters append fields to it, so every cross layer sees them.

Read top to bottom: the errors every downstream module raises, `Batch` (what every downstream model eats),
`DownstreamSizes`, then `DownstreamRanker` (built from `models/blocks.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from lfm.config.model import ModelSettings
from lfm.names import BadInput
from models.adapters import AdapterSizes, Representation, TransferBlock, TransferSpec
from models.blocks import CrossNet, FieldEmbedding, Mlp

DNN_WIDTH_DIVISOR = 2  # the downstream DNN is this many times narrower than the LFM's mixing-tower DNN


class DownstreamError(BadInput):
    """Input a downstream trainer refuses; the message names the thing and the fix."""


class MissingTask(DownstreamError):
    """The task column does not exist."""


class EmptyScenario(DownstreamError):
    """The scenario has no rows in the training or test window."""


class VersionMismatch(DownstreamError):
    """The feature service pins another model version than the checkpoint."""


class MissingVectors(DownstreamError):
    """A transfer variant needs a vector column the frames do not hold."""


class NoReleaseBefore(DownstreamError):
    """No day of the export is released before the rows: every vector would be missing for a broken reason."""


@dataclass(frozen=True)
class Batch:
    """A batch of encoded rows; every downstream model (ranker, IIM, two-tower) reads what it needs from it."""

    fields: Tensor  # (B, F) int64: index of each raw field's value in its vocabulary (0 = out of vocabulary)
    labels: Tensor  # (B,) float32 in {0, 1}
    vectors: Mapping[str, Tensor] = field(default_factory=dict)  # representation name -> (B, d) float32
    # representation name -> (B,) bool: the row's entity had that state (False: new to it, its vector is zeros and
    # the ranker's adapter reads a learned default instead); a name without a mask means every row had one
    present: Mapping[str, Tensor] = field(default_factory=dict)
    users: Tensor | None = None  # (B,) int64 user index, for id-based two-towers
    items: Tensor | None = None  # (B,) int64 item index (0 = item unseen in training)
    item_keys: Tensor | None = None  # (B,) int64 identity of the item over all frames; never a model input,
    #                                   only tells candidates apart when measuring recall@K

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: Tensor) -> "Batch":
        """The rows at `index` (a LongTensor), every tensor sliced alike."""
        pick = (lambda t: None if t is None else t[index])
        return replace(self, fields=self.fields[index], labels=self.labels[index],
                       vectors={k: v[index] for k, v in self.vectors.items()},
                       present={k: v[index] for k, v in self.present.items()},
                       users=pick(self.users), items=pick(self.items), item_keys=pick(self.item_keys))

    @staticmethod
    def concat(parts: Sequence["Batch"]) -> "Batch":
        """Rows of all parts, in order (parts must carry the same vectors)."""
        def cat(name: str) -> Tensor | None:
            ts = [getattr(p, name) for p in parts]
            return None if any(t is None for t in ts) else torch.cat(ts)

        return Batch(fields=torch.cat([p.fields for p in parts]), labels=torch.cat([p.labels for p in parts]),
                     vectors={k: torch.cat([p.vectors[k] for p in parts]) for k in parts[0].vectors},
                     present={k: torch.cat([p.present[k] for p in parts]) for k in parts[0].present},
                     users=cat("users"), items=cat("items"), item_keys=cat("item_keys"))


@dataclass(frozen=True)
class DownstreamSizes:
    """Widths of the downstream ranker (derive them from the LFM settings with `from_lfm`)."""

    embedding_dim: int
    cross_layers: int
    dnn: tuple[int, ...]
    adapter_hidden: tuple[int, ...]

    @classmethod
    def from_lfm(cls, lfm: ModelSettings, divisor: int = DNN_WIDTH_DIVISOR) -> "DownstreamSizes":
        """Same embedding width and cross depth as the LFM, a DNN `divisor` times narrower."""
        dnn = tuple(max(1, w // divisor) for w in lfm.dnn)
        return cls(embedding_dim=lfm.embedding_dim, cross_layers=lfm.cross_layers, dnn=dnn,
                   adapter_hidden=(dnn[0],) if dnn else (lfm.embedding_dim,))

    def adapter_sizes(self) -> AdapterSizes:
        return AdapterSizes(field_dim=self.embedding_dim, mlp_hidden=self.adapter_hidden)


class DownstreamRanker(nn.Module):
    """Embeddings of the scenario's fields (+ adapters) -> cross -> DNN -> logit."""

    def __init__(self, vocab_sizes: Sequence[int], sizes: DownstreamSizes, transfer: TransferSpec = TransferSpec(),
                 vector_dims: Mapping[Representation, int] | None = None) -> None:
        super().__init__()
        n_fields = len(vocab_sizes)
        self.embeddings = FieldEmbedding(vocab_sizes, sizes.embedding_dim)
        self.transfer = TransferBlock(transfer, vector_dims or {}, n_fields, sizes.adapter_sizes())
        width = (n_fields + self.transfer.extra_field_count) * sizes.embedding_dim
        self.cross = CrossNet(width, sizes.cross_layers)
        self.dnn = Mlp(width, sizes.dnn)
        self.head = nn.Linear(self.dnn.out_dim, 1)

    def forward(self, batch: Batch) -> Tensor:  # -> (B,) logits
        e = self.embeddings(batch.fields)  # (B, F, D)
        e = self.transfer(e, batch.vectors, batch.present).embeddings  # (B, F + E, D)
        x = self.cross(e.flatten(1))  # (B, (F + E) * D)
        return self.head(self.dnn(x)).squeeze(-1)  # (B, dnn[-1]) -> (B,)

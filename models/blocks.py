"""The three building blocks every model here is made of: an MLP, a field embedding, a DCNv2 cross layer.

Written once, so that the LFM, the downstream ranker, the transfer adapters and the retrieval two-towers share one
definition of each. `Mlp` is an `nn.Sequential` (Linear, activation, Linear, ...), so its parameters keep the
names `0.weight`, `2.weight`, ... that registered checkpoints and saved user projections were written with.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

# Small initial embeddings: cross layers multiply by x0, so large initial embeddings blow activations up.
EMBEDDING_INIT_STD = 0.01


class Mlp(nn.Sequential):
    """Linear + activation per hidden width, then, when `out_dim` is given, one linear output layer.

    Without `out_dim` the last hidden activation is the output (a DNN); with it the block ends linear (a tower
    whose output is an exported vector, an adapter, a projection). `out_dim` is the output width either way.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int | None = None,
                 activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for w in hidden:
            layers += [nn.Linear(width, w), activation()]
            width = w
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        super().__init__(*layers)
        self.in_dim, self.out_dim, self.hidden = in_dim, width, tuple(hidden)

    @property
    def linears(self) -> list[nn.Linear]:
        """The weighted layers in forward order."""
        return [m for m in self if isinstance(m, nn.Linear)]

    def hidden_outputs(self, x: Tensor) -> list[Tensor]:
        """Every hidden layer's activation in order: (B, in_dim) -> [(B, hidden[0]), (B, hidden[1]), ...]."""
        outs = []
        for i in range(len(self.hidden)):
            x = self[2 * i + 1](self[2 * i](x))  # (B, hidden[i])
            outs.append(x)
        return outs


class FieldEmbedding(nn.Module):
    """One embedding table per field, packed into one matrix with per-field row offsets so a batch is one lookup.

    Row 0 of each field's block is its out-of-vocabulary bucket (the encoders map unseen values and nulls there).
    """

    def __init__(self, cardinalities: Sequence[int], dim: int) -> None:
        super().__init__()
        self.cardinalities = tuple(int(c) for c in cardinalities)  # rows per field, in field order
        self.table = nn.Embedding(sum(cardinalities), dim)
        nn.init.normal_(self.table.weight, std=EMBEDDING_INIT_STD)
        offsets = torch.tensor([0, *cardinalities[:-1]], dtype=torch.int64).cumsum(0)  # (F,) first row per field
        self.register_buffer("offsets", offsets, persistent=False)  # derived from the cardinalities, not a weight

    def forward(self, idx: Tensor, first_field: int = 0) -> Tensor:
        """idx (B, k) holds fields first_field..first_field+k-1 -> (B, k, dim)."""
        return self.table(idx + self.offsets[first_field:first_field + idx.shape[1]])


class CrossLayer(nn.Module):
    """DCNv2 cross layer with a full-rank W: x_{l+1} = x_0 * (W x_l + b) + x_l."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:  # (B, width), (B, width) -> (B, width)
        return x0 * self.linear(x) + x


class CrossNet(nn.ModuleList):
    """`layers` cross layers over one input x0; iterating it yields the `CrossLayer`s in forward order."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__(CrossLayer(width) for _ in range(layers))

    def outputs(self, x0: Tensor) -> list[Tensor]:
        """Every layer's output in order, each (B, width)."""
        outs, x = [], x0
        for layer in self:
            x = layer(x0, x)
            outs.append(x)
        return outs

    def forward(self, x0: Tensor) -> Tensor:  # (B, width) -> (B, width); x0 itself without layers
        outs = self.outputs(x0)
        return outs[-1] if outs else x0

"""Feature-level transfer: adapters that bring UR, IR, CR(user), CR(item) into a ranker.

A downstream ranker sees its own fields as a stack of embeddings (B, F, D). A transferred vector enters it in one
of three ways, chosen per representation:

- `linear`  the usual practice ("SUM" baseline): Linear(rep -> D), appended to the stack as one extra field.
- `mlp`     the non-linear concat adapter: MLP(rep -> hidden -> D), appended as one extra field; a plain linear
            map leaves the upstream/downstream gap the paper measures, a small MLP closes part of it.
- `gate`    scale * sigmoid(Linear(rep -> F*D)) multiplied element-wise into the ranker's own field embeddings:
            the LFM's knowledge re-weights what the downstream model already learns instead of adding a field.

Any subset of the four representations can be switched on, each with its own kind (`TransferSpec`).
Appended fields have the ranker's embedding width D so they join the field stack and every cross layer sees them.

A row whose entity has no state for a representation (a user first seen on the row's day has no CR state yet) is
new, not broken: its adapter reads a learned default vector in place of the missing one (zero-initialised, so it
starts as the zeros the frame holds), and learns what "new to the LFM" means for the task.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping

import torch
from torch import Tensor, nn

from models.blocks import Mlp


class Representation(str, Enum):
    """The four exported representations; the value is the feature/column name in the tables and Feast."""

    ur = "ur"
    ir = "ir"
    cr_user = "cr_user"
    cr_item = "cr_item"


class AdapterKind(str, Enum):
    linear = "linear"  # SUM-style linear projection, appended as an extra field
    mlp = "mlp"  # non-linear concat adapter, appended as an extra field
    gate = "gate"  # sigmoid gate multiplied into the ranker's own field embeddings


class GateShape(str, Enum):
    """How many gate values one representation produces."""

    per_field = "per_field"  # one value per (field, dim): Linear(rep -> F*D)
    shared = "shared"  # one value per dim, the same for every field: Linear(rep -> D)


@dataclass(frozen=True)
class AdapterSizes:
    """Widths of the adapters; `field_dim` must equal the ranker's embedding width."""

    field_dim: int
    mlp_hidden: tuple[int, ...] = (32,)
    # scale 2 with a zero-initialised gate starts every gate at exactly 1, so a gated ranker begins as the
    # no-transfer ranker and learns how far to move from it; scale 1 is the paper's literal sigmoid gate.
    gate_scale: float = 2.0
    gate_shape: GateShape = GateShape.per_field
    gate_zero_init: bool = True


@dataclass(frozen=True)
class TransferSpec:
    """Which representations are switched on and through which adapter (an empty spec = no transfer)."""

    adapters: tuple[tuple[Representation, AdapterKind], ...] = ()

    def __post_init__(self) -> None:
        reps = [r for r, _ in self.adapters]
        if len(set(reps)) != len(reps):
            raise ValueError(f"a representation is listed twice in {self.adapters}")

    @classmethod
    def of(cls, **kinds: AdapterKind | str) -> "TransferSpec":
        """`TransferSpec.of(ur="mlp", cr_user="gate")`, kept in the canonical representation order."""
        chosen = {Representation(k): AdapterKind(v) for k, v in kinds.items()}
        return cls(tuple((r, chosen[r]) for r in Representation if r in chosen))

    @property
    def representations(self) -> tuple[Representation, ...]:
        return tuple(r for r, _ in self.adapters)

    def with_kind(self, kind: AdapterKind) -> tuple[Representation, ...]:
        return tuple(r for r, k in self.adapters if k is kind)

    @property
    def is_empty(self) -> bool:
        return not self.adapters


@dataclass(frozen=True)
class TransferOutput:
    """What the adapters did to one batch (named so that tests and callers never index a tuple)."""

    embeddings: Tensor  # (B, F + E, D): gated own fields followed by the E appended fields
    gate: Tensor | None  # (B, F, D) product of all gates, None when no gate is on
    extra_fields: Tensor | None  # (B, E, D), None when no field is appended


class GateAdapter(nn.Module):
    """scale * sigmoid(Linear(vector)): a multiplicative re-weighting of the ranker's field embeddings."""

    def __init__(self, in_dim: int, n_fields: int, sizes: AdapterSizes) -> None:
        super().__init__()
        self.n_fields = n_fields
        self.dim = sizes.field_dim
        self.shape = sizes.gate_shape
        self.scale = sizes.gate_scale
        out = n_fields * sizes.field_dim if sizes.gate_shape is GateShape.per_field else sizes.field_dim
        self.proj = nn.Linear(in_dim, out)
        if sizes.gate_zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, vector: Tensor) -> Tensor:  # (B, in) -> (B, F, D)
        g = self.scale * torch.sigmoid(self.proj(vector))
        if self.shape is GateShape.per_field:
            return g.view(-1, self.n_fields, self.dim)
        return g.unsqueeze(1).expand(-1, self.n_fields, self.dim)


def make_adapter(kind: AdapterKind, in_dim: int, n_fields: int, sizes: AdapterSizes) -> nn.Module:
    """linear: (B, in) -> (B, D), one projection (SUM); mlp: (B, in) -> (B, D) through `mlp_hidden`; gate: (B, F, D)."""
    if kind is AdapterKind.linear:
        return nn.Linear(in_dim, sizes.field_dim)
    if kind is AdapterKind.mlp:
        return Mlp(in_dim, sizes.mlp_hidden, sizes.field_dim)
    return GateAdapter(in_dim, n_fields, sizes)


class TransferBlock(nn.Module):
    """All adapters of one ranker: gates multiply into the field stack, the other adapters append fields."""

    def __init__(self, spec: TransferSpec, in_dims: Mapping[Representation, int], n_fields: int,
                 sizes: AdapterSizes) -> None:
        super().__init__()
        missing = [r.value for r in spec.representations if r not in in_dims]
        if missing:
            raise ValueError(f"no input width for {missing}: pass in_dims for every switched-on representation")
        self.spec = spec
        self.adapters = nn.ModuleDict({
            r.value: make_adapter(k, in_dims[r], n_fields, sizes) for r, k in spec.adapters})
        # what a row without the representation reads (an entity without that state), learnt per representation
        self.defaults = nn.ParameterDict({r.value: nn.Parameter(torch.zeros(in_dims[r]))
                                          for r in spec.representations})

    def filled(self, rep: Representation, vector: Tensor, present: Tensor | None) -> Tensor:
        """The vector where the row has one, the learned default where it does not."""
        if present is None:
            return vector
        return torch.where(present.unsqueeze(1), vector, self.defaults[rep.value].expand_as(vector))

    @property
    def extra_field_count(self) -> int:
        return len(self.spec.adapters) - len(self.spec.with_kind(AdapterKind.gate))

    def forward(self, embeddings: Tensor, vectors: Mapping[str, Tensor],
                present: Mapping[str, Tensor] | None = None) -> TransferOutput:
        # embeddings: (B, F, D); vectors[rep]: (B, in_dims[rep]); present[rep]: (B,) bool, absent = every row has it
        gate: Tensor | None = None
        extra: list[Tensor] = []
        for rep, kind in self.spec.adapters:
            out = self.adapters[rep.value](self.filled(rep, vectors[rep.value], (present or {}).get(rep.value)))
            if kind is AdapterKind.gate:
                gate = out if gate is None else gate * out  # (B, F, D)
            else:
                extra.append(out)  # (B, D)
        own = embeddings if gate is None else embeddings * gate
        extra_fields = torch.stack(extra, dim=1) if extra else None  # (B, E, D)
        stacked = own if extra_fields is None else torch.cat([own, extra_fields], dim=1)
        return TransferOutput(embeddings=stacked, gate=gate, extra_fields=extra_fields)

"""A lineage of LFM versions: a registered model continued on later days (`lfm pretrain --continue VERSION`).

A continued version starts from its parent's weights and vocabularies. Ids first seen in the new days get rows of
their own, appended after the parent's (`FeatureEncoders.extended`), so every id the parent knew keeps its index
and its trained row, and an id first seen on day D has a row trained on D in the version that saw D. Numeric
buckets and the scenario vocabulary stay fixed along a lineage.

What a version has seen is hash-bound in its card (`Lineage`): the parent, every day whose labels shaped the
weights (training and early-stopping days, the parent's included), and how many ids each field gained. A reader
that must not see the future (an export of day D) checks `seen_through < D`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lfm.names import BadInput

if TYPE_CHECKING:  # torch is imported where weights are carried: reading a card (and its lineage) stays light
    from torch import nn

    from models.blocks import FieldEmbedding


@dataclass(frozen=True)
class Lineage:
    """Where a version comes from and what it has seen."""

    parent: str | None  # the version it continued (None: a base, trained from scratch)
    seen_days: tuple[dt.date, ...]  # sorted: every day whose labels shaped the weights, the ancestors' included
    vocab_growth: dict[str, int] = field(default_factory=dict)  # per field: ids added over the parent

    @property
    def seen_through(self) -> dt.date | None:
        return self.seen_days[-1] if self.seen_days else None

    def to_dict(self) -> dict:
        return {"parent": self.parent, "seen_days": [d.isoformat() for d in self.seen_days],
                "vocab_growth": dict(sorted(self.vocab_growth.items()))}

    @classmethod
    def from_dict(cls, d: dict) -> Lineage:
        return cls(d.get("parent"), tuple(sorted(dt.date.fromisoformat(x) for x in d.get("seen_days", []))),
                   {str(k): int(v) for k, v in d.get("vocab_growth", {}).items()})

    @classmethod
    def base(cls, days: list[dt.date]) -> Lineage:
        return cls(None, tuple(sorted(set(days))))

    def continued(self, version: str, days: list[dt.date], growth: dict[str, int]) -> Lineage:
        """The lineage of a version continued from `version` (whose lineage this is) on `days`: only days after
        everything the parent saw, so a version never trains twice on a day nor goes back in time."""
        early = sorted(d for d in days if self.seen_through is not None and d <= self.seen_through)
        if early:
            raise BadInput(f"model {version} has seen days through {self.seen_through}; continue it on later days "
                           f"(got {', '.join(map(str, early))})")
        return Lineage(version, tuple(sorted(set(self.seen_days) | set(days))), growth)


def lineage_of(card) -> Lineage:
    """A registered version's lineage; a version registered before lineages were recorded is a base that saw the
    training and validation days its metrics name."""
    if card.lineage is not None:
        return card.lineage
    days = card.metrics.get("days", {})
    return Lineage.base([dt.date.fromisoformat(d) for split in ("train", "valid") for d in days.get(split, [])])


def root_of(card, cards: list) -> str:
    """The base version a card's lineage starts from (itself for a base)."""
    return _root(card.model_version, _parents(cards))


def _parents(cards: list) -> dict[str, str | None]:
    return {c.model_version: lineage_of(c).parent for c in cards}


def _root(version: str, parent: dict[str, str | None]) -> str:
    seen = set()
    while parent.get(version) is not None and version not in seen:
        seen.add(version)
        version = parent[version]
    return version


def members(root: str, cards: list) -> list:
    """The registered versions of the lineage rooted at `root` (the root included), in registry order."""
    parent = _parents(cards)  # once, not once per card
    return [c for c in cards if _root(c.model_version, parent) == root]


def newest(lineage: list):
    """The version of a lineage that has seen the latest day (the latest registered among equals)."""
    return max(enumerate(lineage), key=lambda ic: (lineage_of(ic[1]).seen_through or dt.date.min, ic[0]))[1]


def maker_of(lineage: list, day: dt.date):
    """The version that makes day `day`: the one whose seen days end latest before `day` (time-correct: nothing
    it learned comes from `day` or after); None when every version has seen `day` or later."""
    before = [c for c in lineage if (lineage_of(c).seen_through or dt.date.min) < day]
    return newest(before) if before else None


def carry_weights(parent: nn.Module, child: nn.Module) -> None:
    """Copy the parent's weights into a child built with grown vocabularies: every field's rows go to the same
    index in the child's (longer) block; the child's extra rows keep their fresh initialisation; every other
    tensor must have the same shape."""
    import torch

    from models.blocks import FieldEmbedding

    parents = dict(parent.named_modules())
    with torch.no_grad():
        for name, module in child.named_modules():
            if isinstance(module, FieldEmbedding):
                _carry_rows(parents[name], module, name)
        grown = {f"{n}.table.weight" for n, m in child.named_modules() if isinstance(m, FieldEmbedding)}
        source = parent.state_dict()
        for key, tensor in child.state_dict().items():
            if key in grown:
                continue
            if source[key].shape != tensor.shape:
                raise BadInput(f"{key}: the parent's tensor has shape {tuple(source[key].shape)}, the continued "
                               f"model's {tuple(tensor.shape)}; a lineage keeps its architecture")
            tensor.copy_(source[key])


def _carry_rows(old: FieldEmbedding, new: FieldEmbedding, name: str) -> None:
    if len(old.cardinalities) != len(new.cardinalities) or any(
            n < o for o, n in zip(old.cardinalities, new.cardinalities)):
        raise BadInput(f"{name}: fields {old.cardinalities} cannot grow into {new.cardinalities}")
    src, dst = old.table.weight, new.table.weight  # (sum of rows, dim)
    o_at = n_at = 0
    for o_rows, n_rows in zip(old.cardinalities, new.cardinalities):
        dst[n_at:n_at + o_rows] = src[o_at:o_at + o_rows]
        o_at, n_at = o_at + o_rows, n_at + n_rows

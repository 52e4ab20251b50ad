"""Module-level transfer: the Isomorphic Interaction Module (IIM).

The downstream model is built from the LFM's own classes (`models.lfm`), so its interaction module has exactly
the LFM's architecture (embedding variant, towers, cross layers, optional FM, DNN), followed by one new logit for
the target scenario and task. Initialisation from a registered checkpoint:
- the input layers, i.e. everything that produces the mixing tower's input x0 = [field embeddings, UR, IR]
  (CR point `embed`): the field embeddings and the two towers;
- the first k interaction layers in mixing-tower order: cross1..crossL, then dnn1..dnnM (FM has no weights);
- every later interaction layer keeps its fresh random initialisation; the new head starts at zero.
Then everything is fine-tuned on the downstream scenario. The control (`pretrained=False`) is the same
architecture with nothing copied. Fresh layers are drawn in the same order in both, so under one seed the IIM and
its control differ only in what was copied.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import torch
from torch import Tensor, nn

from models.downstream import Batch, DownstreamError, VersionMismatch
from models.encoders import FeatureEncoders
from models.lfm import Lfm, build_lfm
from models.registry import Checkpoint


class IimDepthError(DownstreamError):
    """k asks for more interaction layers than the LFM has."""


def interaction_layers(lfm: Lfm) -> list[nn.Module]:
    """The mixing tower's weighted layers in forward order: cross layers, then DNN layers."""
    return [*lfm.mixing.crosses, *lfm.mixing.dnn.linears]


def input_layers(lfm: Lfm) -> list[nn.Module]:
    """What produces the mixing tower's input x0: field embeddings, user tower (UR), item tower (IR)."""
    return [lfm.embedding, lfm.user_tower, lfm.item_tower]


class IimModel(nn.Module):
    """An LFM body without its multi-scenario heads, and one new logit for the downstream scenario."""

    def __init__(self, body: Lfm, scenario_index: int) -> None:
        super().__init__()
        body.heads = None  # the LFM's per-(scenario, task) heads are replaced by `head`
        body.stem = None  # STEM's task experts read task slices of the LFM's tasks; the IIM has one new task
        self.body = body
        # A zero head: a random one would point the copied features in a random direction (half the time
        # reversed, an AUC far below 0.5 that takes epochs to undo); from zero the first steps align it.
        self.head = nn.Linear(body.mixing.out_dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("scenario", torch.tensor(scenario_index, dtype=torch.long), persistent=False)

    def forward(self, batch: Batch) -> Tensor:  # -> (B,) logits
        fields = batch.fields  # (B, F) encoded with the checkpoint's vocabularies
        u = self.body.spec.user_fields
        ur = self.body.user_vectors(fields[:, :u])  # (B, ur_dim)
        ir = self.body.item_vectors(fields[:, u:])  # (B, ir_dim)
        emb = self.body.embedding(fields, self.scenario.expand(fields.shape[0]))  # mixing: (B, F, D)
        cr = self.body.mixing(emb.mixing, ur, ir)  # point -> (B, width)
        return self.head(cr[self.body.mixing.last]).squeeze(-1)  # (B,)


@dataclass
class IimSource:
    """A verified checkpoint and the target scenario: builds IIMs (and their controls) for any k."""

    checkpoint: Checkpoint
    scenario: object  # the downstream scenario's raw value (e.g. tab 4)
    lineage_root: str | None = None  # the base of the checkpoint's lineage: its export's feature service carries it

    @property
    def encoders(self) -> FeatureEncoders:
        return self.checkpoint.encoders

    @property
    def model_version(self) -> str:
        return self.checkpoint.card.model_version

    @property
    def depth(self) -> int:
        return len(interaction_layers(self.checkpoint.model))

    def scenario_index(self) -> int:
        """The scenario's index in the checkpoint's vocabulary (OOV when the LFM never saw it)."""
        return int(self.encoders.scenario.encode(pa.array([str(self.scenario)]))[0])

    def check_feature_version(self, feature_version: str | None) -> None:
        """Refuse features exported by another model version than this checkpoint (a lineage export's feature
        service carries its base, whichever of its versions the checkpoint is)."""
        if feature_version is not None and feature_version not in (self.model_version, self.lineage_root):
            raise VersionMismatch(
                f"the feature service serves model version {feature_version} but the IIM checkpoint is "
                f"{self.model_version}: pin the feature service of {self.model_version} "
                f"(or pass --checkpoint {feature_version})")

    def build(self, k: int, pretrained: bool) -> IimModel:
        """A fresh IIM; with `pretrained`, input layers and the first k interaction layers come from the LFM."""
        if not 0 <= k <= self.depth:
            raise IimDepthError(f"k={k} but the LFM {self.model_version} has {self.depth} interaction layers "
                                f"(cross + DNN): choose k in 0..{self.depth}")
        card = self.checkpoint.card
        model = IimModel(build_lfm(self.encoders, card.schema, card.model), self.scenario_index())
        if pretrained:
            source = self.checkpoint.model
            copied = input_layers(source) + interaction_layers(source)[:k]
            targets = input_layers(model.body) + interaction_layers(model.body)[:k]
            for src, dst in zip(copied, targets):
                dst.load_state_dict(src.state_dict())
        for p in model.parameters():  # the checkpoint is frozen; its copy here is fine-tuned
            p.requires_grad_(True)
        return model


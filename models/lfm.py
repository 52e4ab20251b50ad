"""The LFM: field embeddings -> user tower (UR), item tower (IR), mixing tower (CR points) -> per-scenario heads.

Layout:
- field embeddings, one of three variants (`model.embedding`): plain tables, STEM shared + task slices, or
  Crocodile multi-table experts with a prior gate and covariance loss;
- the user tower reads only user-field embeddings and the item tower only item-field embeddings, so UR can be
  computed from the users table alone and IR from the items table alone;
- the mixing tower reads [field embeddings, UR, IR] (point `embed`), applies DCNv2 cross layers
  x_{l+1} = x_0 * (W x_l + b) + x_l (points `cross1`..), an optional FM term (point `fm`), then DNN layers
  (points `dnn1`..); every one of those activations is a named CR extraction point;
- heads per (scenario, task): each sample gets its own scenario's logit for every task.
Representations are returned in `LfmOutput`, never stored on the module, so the model is safe to share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lfm.config.model import EmbeddingVariant, ModelSettings
from lfm.config.schema import DataSchema
from lfm.names import BadInput
from models.blocks import EMBEDDING_INIT_STD, CrossNet, FieldEmbedding, Mlp
from models.encoders import FeatureEncoders


@dataclass(frozen=True)
class LfmSpec:
    """Everything that fixes the parameter shapes: from the fitted encoders, the schema and the settings."""

    cardinalities: tuple[int, ...]  # per field, user fields first
    user_fields: int  # how many of the fields are user fields
    n_scenarios: int  # including the OOV scenario bucket
    tasks: tuple[str, ...]
    prior_fields: tuple[int, ...]  # field positions of the user and item keys (Crocodile's gate reads them)
    settings: ModelSettings

    def __post_init__(self) -> None:
        if self.user_fields < 1 or self.user_fields >= len(self.cardinalities):
            raise BadInput("the LFM needs at least one user field and one item field in the schema "
                           f"(got {self.user_fields} user of {len(self.cardinalities)} fields)")

    @property
    def n_fields(self) -> int:
        return len(self.cardinalities)


class LfmOutput(NamedTuple):
    logits: Tensor  # (batch, tasks): each sample's own scenario logit per task
    ur: Tensor  # (batch, ur_dim)
    ir: Tensor  # (batch, ir_dim)
    cr: dict[str, Tensor]  # point name -> (batch, width), mixing-tower order
    aux_loss: Tensor  # scalar: weighted Crocodile covariance loss, 0 otherwise


class EmbeddingOut(NamedTuple):
    mixing: Tensor  # (batch, fields, dim): what the mixing tower reads
    task_slices: Tensor | None  # STEM only: (batch, tasks, fields, task_dim)
    aux_loss: Tensor  # scalar


class PlainEmbedding(nn.Module):
    """One table per field; towers and mixing tower read the same vectors."""

    def __init__(self, spec: LfmSpec) -> None:
        super().__init__()
        self.tower_dim = self.mixing_dim = spec.settings.embedding_dim
        self.table = FieldEmbedding(spec.cardinalities, spec.settings.embedding_dim)

    def tower_view(self, idx: Tensor, first_field: int) -> Tensor:
        return self.table(idx, first_field)  # (batch, k, dim)

    def forward(self, idx: Tensor, scenario: Tensor) -> EmbeddingOut:
        return EmbeddingOut(self.table(idx), None, idx.new_zeros((), dtype=torch.float32))


class StemEmbedding(nn.Module):
    """STEM: each field's row = [shared slice (embedding_dim) | task 1 slice | ... | task T slice].

    The towers and the mixing tower (the shared expert) read the shared slice; task t's expert reads slice t.
    """

    def __init__(self, spec: LfmSpec) -> None:
        super().__init__()
        s = spec.settings
        self.n_tasks, self.task_dim = len(spec.tasks), s.stem_task_dim
        self.tower_dim = self.mixing_dim = s.embedding_dim
        self.table = FieldEmbedding(spec.cardinalities, s.embedding_dim + self.n_tasks * s.stem_task_dim)

    def tower_view(self, idx: Tensor, first_field: int) -> Tensor:
        return self.table(idx, first_field)[..., :self.mixing_dim]  # (batch, k, dim)

    def forward(self, idx: Tensor, scenario: Tensor) -> EmbeddingOut:
        rows = self.table(idx)  # (batch, fields, dim + tasks * task_dim)
        shared = rows[..., :self.mixing_dim]  # (batch, fields, dim)
        tasks = rows[..., self.mixing_dim:].unflatten(-1, (self.n_tasks, self.task_dim))  # (batch, fields, T, td)
        return EmbeddingOut(shared, tasks.transpose(1, 2), rows.new_zeros(()))  # slices (batch, T, fields, td)


def covariance_loss(outputs: Tensor) -> Tensor:
    """Crocodile's cross-expert covariance loss over expert outputs (batch N, experts M, width d).

    L = 1/(N d^2) * sum_{p<q} |(O_p - mean O_p)^T (O_q - mean O_q)|_1. Without the 1/N the co-moment sum grows with
    the batch; dividing by N makes it a covariance, so `crocodile_cov_weight` means the same at any batch size.
    """
    n, m, d = outputs.shape
    centred = outputs - outputs.mean(dim=0, keepdim=True)  # (N, M, d)
    total = outputs.new_zeros(())
    for p in range(m):
        for q in range(p + 1, m):
            total = total + (centred[:, p].T @ centred[:, q]).abs().sum() / n  # (d, d) cross-covariance
    return total / (d * d)


class CrocodileEmbedding(nn.Module):
    """Crocodile: M tables, each feeding one expert; a prior gate mixes the experts per dimension.

    Expert m is a linear map of table m's field vectors. The gate reads only the prior fields (user key, item key)
    and the scenario, and weights the M expert outputs per (field, dimension) with a softmax over experts. The
    towers read the ungated mean of the experts, so UR stays a function of user fields alone.
    """

    def __init__(self, spec: LfmSpec) -> None:
        super().__init__()
        s = spec.settings
        dim, m = s.embedding_dim, s.crocodile_tables
        self.tower_dim = self.mixing_dim = dim
        self.n_fields, self.cov_weight = spec.n_fields, s.crocodile_cov_weight
        self.tables = nn.ModuleList(FieldEmbedding(spec.cardinalities, dim) for _ in range(m))
        self.experts = nn.ModuleList(nn.Linear(dim, dim) for _ in range(m))
        self.register_buffer("prior_fields", torch.tensor(spec.prior_fields, dtype=torch.int64), persistent=False)
        priors = [spec.cardinalities[i] for i in spec.prior_fields]
        self.prior = FieldEmbedding(priors, dim) if priors else None
        self.scenario = nn.Embedding(spec.n_scenarios, dim)
        nn.init.normal_(self.scenario.weight, std=EMBEDDING_INIT_STD)
        self.gate_layer = nn.Linear((len(spec.prior_fields) + 1) * dim, m * spec.n_fields * dim)

    def expert_outputs(self, idx: Tensor, first_field: int = 0) -> Tensor:
        outs = [expert(table(idx, first_field)) for table, expert in zip(self.tables, self.experts)]
        return torch.stack(outs, dim=1)  # (batch, M, k, dim)

    def tower_view(self, idx: Tensor, first_field: int) -> Tensor:
        return self.expert_outputs(idx, first_field).mean(dim=1)  # (batch, k, dim)

    def gate(self, idx: Tensor, scenario: Tensor) -> Tensor:
        """Per-dimension expert weights from the prior fields only: (batch, M, fields, dim), summing to 1 over M."""
        parts = [self.scenario(scenario)]  # (batch, dim)
        if self.prior is not None:
            parts.insert(0, self.prior(idx[:, self.prior_fields]).flatten(1))  # (batch, priors * dim)
        logits = self.gate_layer(torch.cat(parts, dim=1))  # (batch, M * fields * dim)
        return logits.unflatten(1, (len(self.tables), self.n_fields, self.mixing_dim)).softmax(dim=1)

    def forward(self, idx: Tensor, scenario: Tensor) -> EmbeddingOut:
        outs = self.expert_outputs(idx)  # (batch, M, fields, dim)
        mixed = (self.gate(idx, scenario) * outs).sum(dim=1)  # (batch, fields, dim)
        aux = self.cov_weight * covariance_loss(outs.flatten(2)) if self.training else outs.new_zeros(())
        return EmbeddingOut(mixed, None, aux)


class Tower(nn.Module):
    """MLP over flattened field vectors; the last layer is linear (its output is the exported vector)."""

    def __init__(self, in_dim: int, widths: list[int]) -> None:
        super().__init__()
        self.net = Mlp(in_dim, widths[:-1], widths[-1])
        self.out_dim = self.net.out_dim

    def forward(self, fields: Tensor) -> Tensor:
        return self.net(fields.flatten(1))  # (batch, k, dim) -> (batch, out_dim)


def fm_term(fields: Tensor) -> Tensor:
    """Factorisation-machine pairwise term per dimension: 0.5 * ((sum_f e_f)^2 - sum_f e_f^2)."""
    return 0.5 * (fields.sum(dim=1).pow(2) - fields.pow(2).sum(dim=1))  # (batch, fields, dim) -> (batch, dim)


class MixingTower(nn.Module):
    """[field embeddings, UR, IR] -> cross layers -> (FM) -> DNN; returns every activation by name."""

    def __init__(self, n_fields: int, field_dim: int, ur_dim: int, ir_dim: int, s: ModelSettings) -> None:
        super().__init__()
        width = n_fields * field_dim + ur_dim + ir_dim
        self.points: dict[str, int] = {"embed": width}
        self.crosses = CrossNet(width, s.cross_layers)
        self.points.update({f"cross{i + 1}": width for i in range(s.cross_layers)})
        self.fm = s.fm
        if s.fm:
            self.points["fm"] = width + field_dim  # last cross output with the FM vector appended
            width += field_dim
        self.dnn = Mlp(width, s.dnn)
        self.points.update({f"dnn{i + 1}": w for i, w in enumerate(s.dnn)})
        self.last = next(reversed(self.points))
        self.out_dim = self.dnn.out_dim

    def forward(self, fields: Tensor, ur: Tensor, ir: Tensor) -> dict[str, Tensor]:
        x0 = torch.cat([fields.flatten(1), ur, ir], dim=1)  # (batch, fields * dim + ur + ir)
        crosses = self.crosses.outputs(x0)  # each (batch, width)
        cr = {"embed": x0, **{f"cross{i + 1}": x for i, x in enumerate(crosses)}}
        x = crosses[-1] if crosses else x0
        if self.fm:
            x = cr["fm"] = torch.cat([x, fm_term(fields)], dim=1)  # (batch, width + dim)
        cr.update({f"dnn{i + 1}": h for i, h in enumerate(self.dnn.hidden_outputs(x))})  # (batch, dnn[i]) each
        return cr


class StemExperts(nn.Module):
    """STEM gating with All-Forward, Task-specific-Backward.

    Experts: the shared expert (the mixing tower's output, reading the shared slice) and one expert per task
    (reading that task's slice). Task t's gate reads [shared slice, slice t] and mixes all T+1 experts; the other
    tasks' experts join task t's forward pass detached, so task t's loss trains only slice t, expert t, gate t
    and the shared path.
    """

    def __init__(self, spec: LfmSpec, width: int) -> None:
        super().__init__()
        s, n_tasks = spec.settings, len(spec.tasks)
        self.experts = nn.ModuleList(Mlp(spec.n_fields * s.stem_task_dim, [width]) for _ in range(n_tasks))
        self.gates = nn.ModuleList(
            nn.Linear(spec.n_fields * (s.embedding_dim + s.stem_task_dim), n_tasks + 1) for _ in range(n_tasks))

    def forward(self, shared_out: Tensor, shared: Tensor, task_slices: Tensor) -> Tensor:
        """shared_out (batch, H), shared (batch, fields, dim), task_slices (batch, T, fields, td) -> (batch, T, H)."""
        task_outs = [expert(task_slices[:, t].flatten(1)) for t, expert in enumerate(self.experts)]  # T x (batch, H)
        mixed = []
        for t, gate in enumerate(self.gates):
            others = [out if j == t else out.detach() for j, out in enumerate(task_outs)]
            experts = torch.stack([shared_out, *others], dim=1)  # (batch, T + 1, H)
            weights = gate(torch.cat([shared.flatten(1), task_slices[:, t].flatten(1)], dim=1)).softmax(dim=1)
            mixed.append((weights.unsqueeze(-1) * experts).sum(dim=1))  # (batch, H)
        return torch.stack(mixed, dim=1)


class ScenarioTaskHeads(nn.Module):
    """One logistic head per (scenario, task); a sample only evaluates (and trains) its own scenario's heads."""

    def __init__(self, n_scenarios: int, n_tasks: int, width: int) -> None:
        super().__init__()
        bound = width ** -0.5
        self.weight = nn.Parameter(torch.empty(n_scenarios, n_tasks, width).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n_scenarios, n_tasks))

    def forward(self, h: Tensor, scenario: Tensor) -> Tensor:
        """h (batch, T, H), scenario (batch,) -> logits (batch, T)."""
        return (h * self.weight[scenario]).sum(dim=-1) + self.bias[scenario]


_EMBEDDINGS = {EmbeddingVariant.plain: PlainEmbedding, EmbeddingVariant.stem: StemEmbedding,
               EmbeddingVariant.crocodile: CrocodileEmbedding}


class Lfm(nn.Module):
    """The foundation model. `forward` gives logits and every representation; nothing is cached on the module."""

    def __init__(self, spec: LfmSpec) -> None:
        super().__init__()
        s = spec.settings
        self.spec = spec
        self.embedding = _EMBEDDINGS[s.embedding](spec)
        n_user, n_item = spec.user_fields, spec.n_fields - spec.user_fields
        self.user_tower = Tower(n_user * self.embedding.tower_dim, s.user_tower)
        self.item_tower = Tower(n_item * self.embedding.tower_dim, s.item_tower)
        self.mixing = MixingTower(spec.n_fields, self.embedding.mixing_dim, self.user_tower.out_dim,
                                  self.item_tower.out_dim, s)
        self.stem = StemExperts(spec, self.mixing.out_dim) if s.embedding == EmbeddingVariant.stem else None
        self.heads = ScenarioTaskHeads(spec.n_scenarios, len(spec.tasks), self.mixing.out_dim)

    @property
    def ur_dim(self) -> int:
        return self.user_tower.out_dim

    @property
    def ir_dim(self) -> int:
        return self.item_tower.out_dim

    @property
    def cr_points(self) -> dict[str, int]:
        return dict(self.mixing.points)

    def user_vectors(self, user_fields: Tensor) -> Tensor:
        """UR from the user fields alone: (batch, user fields) -> (batch, ur_dim)."""
        return self.user_tower(self.embedding.tower_view(user_fields, 0))

    def item_vectors(self, item_fields: Tensor) -> Tensor:
        """IR from the item fields alone: (batch, item fields) -> (batch, ir_dim)."""
        return self.item_tower(self.embedding.tower_view(item_fields, self.spec.user_fields))

    def cross_points(self, fields: Tensor, scenario: Tensor) -> dict[str, Tensor]:
        """Only the mixing tower's named points (no STEM experts, no heads): what CR extraction needs."""
        ur = self.user_vectors(fields[:, :self.spec.user_fields])  # (batch, ur_dim)
        ir = self.item_vectors(fields[:, self.spec.user_fields:])  # (batch, ir_dim)
        return self.mixing(self.embedding(fields, scenario).mixing, ur, ir)  # name -> (batch, width)

    def forward(self, fields: Tensor, scenario: Tensor) -> LfmOutput:
        """fields (batch, fields) int64 (user fields first), scenario (batch,) int64."""
        ur = self.user_vectors(fields[:, :self.spec.user_fields])  # (batch, ur_dim)
        ir = self.item_vectors(fields[:, self.spec.user_fields:])  # (batch, ir_dim)
        emb = self.embedding(fields, scenario)  # mixing (batch, fields, dim)
        cr = self.mixing(emb.mixing, ur, ir)  # name -> (batch, width)
        h = cr[self.mixing.last]  # (batch, H)
        if self.stem is not None:
            per_task = self.stem(h, emb.mixing, emb.task_slices)  # (batch, T, H)
        else:
            per_task = h.unsqueeze(1).expand(-1, len(self.spec.tasks), -1)  # (batch, T, H)
        return LfmOutput(self.heads(per_task, scenario), ur, ir, cr, emb.aux_loss)


def build_lfm(encoders: FeatureEncoders, schema: DataSchema, settings: ModelSettings) -> Lfm:
    """An untrained LFM shaped by fitted encoders (vocabulary sizes), the data schema and the model settings."""
    names = [e.name for e in encoders.fields]
    priors = tuple(names.index(k) for k in (schema.user_key, schema.item_key) if k in names)
    spec = LfmSpec(cardinalities=tuple(encoders.cardinalities), user_fields=len(encoders.user),
                   n_scenarios=encoders.scenario.cardinality, tasks=tuple(schema.tasks), prior_fields=priors,
                   settings=settings)
    return Lfm(spec)


def lfm_loss(out: LfmOutput, labels: Tensor, mask: Tensor, scenario: Tensor, n_scenarios: int,
             power: float) -> Tensor:
    """BCE balanced across scenarios: per (scenario, task) mean, scenarios weighted by n_s ** power, tasks averaged.

    power 1 is the plain sample mean, 0 gives every scenario present in the batch equal weight (see ModelSettings).
    """
    bce = nn.functional.binary_cross_entropy_with_logits(out.logits, labels, reduction="none") * mask  # (batch, T)
    sums = bce.new_zeros(n_scenarios, bce.shape[1]).index_add_(0, scenario, bce)  # (S, T)
    counts = mask.new_zeros(n_scenarios, bce.shape[1]).index_add_(0, scenario, mask)  # (S, T)
    weights = torch.where(counts > 0, counts.clamp(min=1).pow(power), torch.zeros_like(counts))  # (S, T)
    per_task = (weights * sums / counts.clamp(min=1)).sum(0) / weights.sum(0).clamp(min=1e-12)  # (T,)
    return per_task.mean() + out.aux_loss

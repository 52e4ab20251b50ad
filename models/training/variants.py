"""The typed options of a downstream run: the transfer variants and their granularity (feature, module, model).

Feature level feeds UR/IR/CR through adapters into the scenario's ranker, module level starts an isomorphic
interaction module from the LFM's layers, model level is a retrieval two-tower on the frozen IR.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from models.adapters import AdapterKind, Representation, TransferSpec
from models.downstream import DownstreamError
from models.two_tower import UserSource


class Granularity(str, Enum):
    """Where the LFM's knowledge enters the downstream model."""

    none = "none"  # it does not: the scenario's own model
    feature = "feature"  # vectors through adapters into the ranker's field stack
    module = "module"  # the interaction module's weights
    model = "model"  # a whole retrieval model: user vectors scored against the frozen IR


class TransferVariant(str, Enum):
    """One row of the transfer report; `granularity`, `transfer_spec` and `user_source` say what it trains."""

    none = "none"  # the scenario's own fields only
    ur_linear = "ur_linear"  # SUM-style: UR through one linear projection
    ur_mlp = "ur_mlp"  # UR through the MLP adapter
    ur_ir_mlp = "ur_ir_mlp"  # UR and IR through MLP adapters
    ur_ir_cr_mlp = "ur_ir_cr_mlp"  # UR, IR, CR(user), CR(item), all through MLP adapters
    ur_ir_cr_gate = "ur_ir_cr_gate"  # UR and IR through MLP adapters, CR(user) and CR(item) through sigmoid gates
    cr_gate = "cr_gate"  # CR(user) and CR(item) gates alone: isolates CR, used to compare CR extraction layers
    iim = "iim"  # Isomorphic Interaction Module from the checkpoint's embeddings and first k layers
    iim_random = "iim_random"  # its control: the same architecture from random initialisation
    retrieval_scratch = "retrieval_scratch"  # two-tower on id embeddings (control)
    retrieval_ur = "retrieval_ur"  # frozen IR item side, projection of UR user side
    retrieval_cr_user = "retrieval_cr_user"  # frozen IR item side, projection of CR(user) user side

    @property
    def granularity(self) -> Granularity:
        if self is TransferVariant.none:
            return Granularity.none
        if self in (TransferVariant.iim, TransferVariant.iim_random):
            return Granularity.module
        if self.user_source is not None:
            return Granularity.model
        return Granularity.feature

    @property
    def transfer_spec(self) -> TransferSpec:
        """The adapters of a ranker variant (empty for none and for module/model-level variants)."""
        mlp, gate, lin = AdapterKind.mlp, AdapterKind.gate, AdapterKind.linear
        presets = {
            TransferVariant.ur_linear: TransferSpec.of(ur=lin),
            TransferVariant.ur_mlp: TransferSpec.of(ur=mlp),
            TransferVariant.ur_ir_mlp: TransferSpec.of(ur=mlp, ir=mlp),
            TransferVariant.ur_ir_cr_mlp: TransferSpec.of(ur=mlp, ir=mlp, cr_user=mlp, cr_item=mlp),
            TransferVariant.ur_ir_cr_gate: TransferSpec.of(ur=mlp, ir=mlp, cr_user=gate, cr_item=gate),
            TransferVariant.cr_gate: TransferSpec.of(cr_user=gate, cr_item=gate),
        }
        return presets.get(self, TransferSpec())

    @property
    def user_source(self) -> UserSource | None:
        return {TransferVariant.retrieval_scratch: UserSource.scratch, TransferVariant.retrieval_ur: UserSource.ur,
                TransferVariant.retrieval_cr_user: UserSource.cr_user}.get(self)


@dataclass(frozen=True)
class TransferRequest:
    """One variant to train; `k` is the IIM depth, `spec` overrides a feature-level variant's adapters."""

    variant: TransferVariant
    k: int | None = None
    spec: TransferSpec | None = None

    def __post_init__(self) -> None:
        if self.variant is TransferVariant.iim and self.k is None:
            raise DownstreamError("iim needs k, the number of interaction layers to copy from the checkpoint "
                                  "(--k K; 0 copies the input layers only)")
        if self.variant is not TransferVariant.iim and self.k is not None:
            # the control copies nothing, so it is one model whatever k its IIMs use
            object.__setattr__(self, "k", None)
        if self.k is not None and self.k < 0:
            raise DownstreamError(f"k must be >= 0, got {self.k}")

    @property
    def adapters(self) -> TransferSpec:
        return self.spec if self.spec is not None else self.variant.transfer_spec

    @property
    def label(self) -> str:
        """Stable name in reports: the variant, plus k for the IIM."""
        return self.variant.value if self.k is None else f"{self.variant.value}_k{self.k}"

    @property
    def representations(self) -> tuple[Representation, ...]:
        """The vector columns this variant reads."""
        source = self.variant.user_source
        if source is None:
            return self.adapters.representations
        return () if source.representation is None else (source.representation, Representation.ir)

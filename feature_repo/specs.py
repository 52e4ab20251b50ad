"""What Feast needs to know about one exported model version, and the names of its Feast objects.

A `VersionSpec` is all the Feast definitions depend on, so they can be built and tested without the model
registry; `spec_from_card` is the thin adapter from `models.registry.ModelCard`.
Names carry the full version: two versions are two embedding spaces and must never share a view (Feast 0.67's
`FeatureView(version=...)` keeps one active definition per name, so it cannot hold versions side by side).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lfm.config import LfmConfig
from lfm.names import check_model_version

from feature_repo.errors import SpecConflict

TABLES = ("ur", "ir", "cr_user", "cr_item")  # Delta table = feature name = view prefix
USER_TABLES = ("ur", "cr_user")
ITEM_TABLES = ("ir", "cr_item")
CURRENT_SERVICE = "lfm_current"
_LAYER = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@dataclass(frozen=True)
class VersionSpec:
    """One model version as exported: its vector widths and the CR layer its CR tables hold."""

    version: str
    ur_dim: int
    ir_dim: int
    cr_dim: int
    cr_layer: str

    def __post_init__(self) -> None:
        check_model_version(self.version)
        if not _LAYER.match(self.cr_layer or ""):
            raise SpecConflict(f"bad CR layer name {self.cr_layer!r} for model {self.version}: "
                               "use letters, digits, '_', '.', ':' or '-'")
        for name in ("ur_dim", "ir_dim", "cr_dim"):
            if int(getattr(self, name)) < 1:
                raise SpecConflict(f"model {self.version}: {name} must be >= 1, got {getattr(self, name)}")

    def dim(self, table: str) -> int:
        return {"ur": self.ur_dim, "ir": self.ir_dim, "cr_user": self.cr_dim, "cr_item": self.cr_dim}[table]

    def layer(self, table: str) -> str:
        """The CR layer a table's rows must carry ('' for UR/IR, which have no layer)."""
        return self.cr_layer if table.startswith("cr_") else ""


def view_name(table: str, version: str) -> str:
    return f"{table}_v{check_model_version(version)}"


def service_name(version: str) -> str:
    return f"lfm_v{check_model_version(version)}"


def entity_of(table: str) -> str:
    return "user" if table in USER_TABLES else "video"


def key_of(cfg: LfmConfig, table: str) -> str:
    return cfg.schema.user_key if table in USER_TABLES else cfg.schema.item_key


def spec_from_card(card) -> VersionSpec:
    """Adapter from `models.registry.ModelCard`; the CR layer follows the refresh's rule (selected, else last)."""
    layer = card.selected_cr_layer or list(card.cr_points)[-1]
    if layer not in card.cr_points:
        raise SpecConflict(f"model {card.model_version}: selected CR layer {layer!r} is not one of its CR points "
                           f"{list(card.cr_points)}")
    return VersionSpec(version=card.model_version, ur_dim=int(card.ur_dim), ir_dim=int(card.ir_dim),
                       cr_dim=int(card.cr_points[layer]), cr_layer=layer)


def specs_from_registry(cfg: LfmConfig, versions: list[str] | None = None) -> list[VersionSpec]:
    """Specs of the model registry's versions (all, or the given ones), oldest first."""
    from models.registry import Registry  # lazy: imports torch

    reg = Registry(cfg)
    cards = [reg.card(check_model_version(v)) for v in versions] if versions else reg.list()
    return [spec_from_card(c) for c in cards]

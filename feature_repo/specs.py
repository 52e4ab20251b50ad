"""The names of one export's Feast objects, and which entity and key each embedding table belongs to.

An export (`lfm.contract.ExportSpec`) is one embedding space: its views and feature service carry its id, so two
exports — two model versions, or one model under another CR layer or decay — never share a view (Feast 0.67's
`FeatureView(version=...)` keeps one active definition per name, so it cannot hold spaces side by side).
"""
from __future__ import annotations

from lfm.config import KeyType, LfmConfig
from lfm.contract import ExportSpec, side_of
from lfm.names import check_export_id

CURRENT_SERVICE = "lfm_current"


def view_name(table: str, export_id: str) -> str:
    return f"{table}_e{check_export_id(export_id)}"


def service_name(export_id: str) -> str:
    return f"lfm_e{check_export_id(export_id)}"


def key_of(cfg: LfmConfig, table: str) -> str:
    return cfg.schema.user_key if side_of(table) == "user" else cfg.schema.item_key


def key_type_of(cfg: LfmConfig, table: str) -> KeyType:
    """The type of the key a table is keyed by (`LfmConfig.key_type` of its side)."""
    return cfg.key_type(side_of(table))


def entity_of(table: str) -> str:
    return side_of(table)


def spec_tags(spec: ExportSpec) -> dict[str, str]:
    """Tags every Feast object of an export carries; `serving.register.registered` reads the spec back from them."""
    return {"model_version": spec.model_version, "export_id": spec.id, "cr_layer": spec.cr_layer,
            "export_spec": spec.to_json()}

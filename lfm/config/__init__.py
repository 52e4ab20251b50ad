"""The one config of lfm-export: `lfm.yaml`, validated with pydantic.

Load order: an explicit path, else `$LFM_CONFIG`, else `./lfm.yaml`, else the embedded default (all defaults).
Relative paths in the file are resolved against the file's folder, so a config works from any working directory.
Every section is strict: an unknown key or a bad value stops with one message naming it.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from lfm.config.downstream import DownstreamSettings
from lfm.config.model import ModelSettings, TrainSettings, UpdateSettings
from lfm.config.platform import RegistrySettings, SparkSettings, StorageSettings
from lfm.config.refresh import RefreshSettings
from lfm.config.schedule import ScheduleSettings
from lfm.config.schema import DataSchema, FeatureField, FieldKind, Strict
from lfm.config.serving import FeastSettings
from lfm.config.sources import KeyType, Sources, declared_key_type, default_sources
from lfm.config.quality import QualitySettings
from lfm.errors import LfmError
from lfm.storage import Location, location

__all__ = ["LfmConfig", "ConfigError", "load_config", "DataSchema", "FeatureField", "FieldKind", "KeyType"]


class ConfigError(LfmError, ValueError):
    """A config file that cannot be used; the message names the key and the fix."""


class LfmConfig(Strict):
    lakehouse: str = "./data/lakehouse"
    spark: SparkSettings = Field(default_factory=SparkSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    schema_: DataSchema = Field(default_factory=DataSchema, alias="schema")
    sources: Sources = Field(default_factory=default_sources)  # raw inputs -> schema; KuaiRand-Pure by default
    model: ModelSettings = Field(default_factory=ModelSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    updates: UpdateSettings = Field(default_factory=UpdateSettings)
    downstream: DownstreamSettings = Field(default_factory=DownstreamSettings)
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    feast: FeastSettings = Field(default_factory=FeastSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)  # an orchestrator's (`orchestration`)
    # A local folder for lfm.log (`lfm.logs`); beside the lakehouse by default, never in it: a dry run or a refused
    # command writes no lakehouse folder.
    logs: str = "./data/logs"
    base_dir: str = Field(default=".", exclude=True)  # folder of the config file; relative paths resolve here

    @property
    def schema(self) -> DataSchema:  # type: ignore[override]
        return self.schema_

    def location(self, path: str) -> Location:
        """Where a config path lives (`lfm.storage`): relative local paths resolve against the config's folder."""
        return location(path, self.base_dir)

    def resolve(self, path: str) -> Path:
        """The absolute local path of a config path; an object-store URI is refused (it has no local path)."""
        where = self.location(path)
        if not where.local:
            raise LfmError(f"{path} is on an object store; this needs a local folder")
        return where.path()

    def log_dir(self) -> Path:
        """Where `lfm` appends its log (`lfm.logs`): the `logs:` folder, relative to the config file's folder."""
        if not self.location(self.logs).local:
            raise ConfigError(f"logs: {self.logs!r} must be a local folder (the log is appended line by line)")
        return self.resolve(self.logs)

    def delta_rs_options(self, path: str) -> dict[str, str] | None:
        """How delta-rs (and obstore) reach `path`: the `storage:` options for an object store, None for local disk."""
        return None if self.location(path).local else self.storage.object_store_options()

    def key_type(self, side: str) -> KeyType:
        """The type of the user ('user') or item ('item') key past ingest: the one home of that fact. It follows
        the key column's declared type in `sources` (int, bigint -> int64; string -> string), and decides Feast's
        entity value type, the online store's key bytes and every cast of the key column."""
        try:
            return declared_key_type(self.schema, self.sources, side)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def table_path(self, name: str) -> str:
        """Location of one Delta table under the lakehouse (a local path or an object-store URI)."""
        from lfm.names import check_table_name

        check_table_name(name)
        return self.location(self.lakehouse).child(name).uri


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key (remove it or fix its spelling)" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{loc}: {msg}")
    return f"invalid config {source}: " + "; ".join(lines)


def config_from_dict(data: dict, source: str = "<dict>", base_dir: str = ".") -> LfmConfig:
    try:
        return LfmConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | os.PathLike | None = None) -> LfmConfig:
    """Load and validate the config (see module docstring for the search order)."""
    chosen = path or os.environ.get("LFM_CONFIG")
    if chosen is None and Path("lfm.yaml").exists():
        chosen = "lfm.yaml"
    if chosen is None:
        return config_from_dict({}, "<embedded default>", os.getcwd())
    p = Path(chosen)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist: pass --config PATH or set LFM_CONFIG")
    try:
        data = yaml.safe_load(p.read_text()) or {}  # safe_load: a config is data, never code
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {p} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections at the top level")
    return config_from_dict(data, str(p), str(p.resolve().parent))

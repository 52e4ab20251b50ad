"""The model registry: one folder per model version, named by a content hash, on this machine's disk or on an
object store (`registry.path: s3://bucket/models`; `lakehouse.artifacts`), chosen by the path alone.

A version folder holds
- `weights.pt`: a plain `state_dict` (tensors only), read back with `torch.load(weights_only=True)`, which
  cannot run code from the file;
- `card.json`: the hash-bound content (model settings, data schema, encoders/vocabularies, tasks, dims, CR points)
  plus hashes of the weights, the training metrics and the registration time;
- `selection.json` (optional, written later): the chosen CR layer and the probe table that justified it.
`model_version` = sha256 over the tensors' bytes and the canonical JSON of the content (first 20 hex chars), so
the same weights, config and vocabularies always get the same version. Every load re-checks the file hash, the
tensor hash and the version, and refuses a checkpoint trained on another data schema than the config's.
On disk a version folder appears whole (written aside, renamed into place); on an object store `weights.pt` is
written first and `card.json` last and create-only, so a version exists once its card does and a writer that died
half-way leaves nothing a reader sees.
Format 1 checkpoints named the mixing tower's DNN layers `mixing.dnn.{i}`; format 2 names them as the shared
`Mlp` block does (`mixing.dnn.{2i}`, activations between); format 1 weights are renamed on load.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.artifacts import Artifacts
from lfm.config import DataSchema, LfmConfig
from lfm.config.model import ModelSettings
from lfm.errors import LfmError
from lfm.names import BadInput, check_model_version
from lfm.storage import location
from models.lineage import Lineage

if TYPE_CHECKING:  # torch is imported where weights are read or written: reading cards stays light
    import torch

    from models.encoders import FeatureEncoders
    from models.lfm import Lfm

log = logging.getLogger(__name__)

FORMAT = 2
READABLE_FORMATS = (1, FORMAT)
WEIGHTS, CARD, SELECTION = "weights.pt", "card.json", "selection.json"
_VERSION_CHARS = 20


class CheckpointError(LfmError):
    """A checkpoint that is missing, corrupt, truncated or tampered with; it is never loaded."""


class SchemaMismatch(LfmError):
    """A checkpoint trained on a different data schema than the config describes."""


class NoModel(LfmError):
    """The registry holds no (such) model version."""


@dataclass(frozen=True)
class ModelCard:
    model_version: str
    ur_dim: int
    ir_dim: int
    cr_points: dict[str, int]  # name -> width, mixing-tower order
    selected_cr_layer: str | None
    schema: DataSchema
    metrics: dict
    model: ModelSettings  # architecture settings the weights were built with
    tasks: list[str]
    scenarios: list[str]  # scenario vocabulary (index 0 = unseen scenario)
    created_at: str
    probe_table: list | dict | None = None
    encoders: dict = field(default_factory=dict, repr=False)
    lineage: Lineage | None = None  # parent and seen days (models registered before lineages: None)


@dataclass
class Checkpoint:
    """A loaded, verified, frozen model with its encoders and card."""

    model: Lfm
    encoders: FeatureEncoders
    card: ModelCard


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def tensor_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in name order: independent of file encoding."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(_canonical([name, str(t.dtype), list(t.shape)]))
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def content_of(model: Lfm, encoders: FeatureEncoders, schema: DataSchema, lineage: Lineage | None = None) -> dict:
    """The hash-bound description of a model: everything needed to rebuild it besides the weights, and where it
    comes from (its lineage, when recorded)."""
    return {
        **({"lineage": lineage.to_dict()} if lineage is not None else {}),
        "format": FORMAT,
        "model": json.loads(model.spec.settings.model_dump_json()),
        "schema": json.loads(schema.model_dump_json(by_alias=True)),
        "encoders": encoders.to_dict(),
        "tasks": list(model.spec.tasks),
        "ur_dim": model.ur_dim,
        "ir_dim": model.ir_dim,
        "cr_points": [[name, width] for name, width in model.cr_points.items()],  # a list keeps tower order
    }


def version_of(weights_hash: str, content: dict) -> str:
    return hashlib.sha256(weights_hash.encode() + b"\n" + _canonical(content)).hexdigest()[:_VERSION_CHARS]


def _pairs(points: list | dict) -> list:
    """CR points as (name, width) pairs: a list of pairs (tower order), or a mapping from early checkpoints."""
    return list(points.items()) if isinstance(points, dict) else points


def _card_from_json(data: dict, selection: dict) -> ModelCard:
    c = data["content"]
    return ModelCard(
        model_version=data["model_version"], ur_dim=int(c["ur_dim"]), ir_dim=int(c["ir_dim"]),
        cr_points={str(k): int(v) for k, v in _pairs(c["cr_points"])},
        selected_cr_layer=selection.get("selected_cr_layer"), schema=DataSchema.model_validate(c["schema"]),
        metrics=data.get("metrics", {}), model=ModelSettings.model_validate(c["model"]), tasks=list(c["tasks"]),
        scenarios=list(c["encoders"]["scenario"]["vocab"]), created_at=data.get("created_at", ""),
        probe_table=selection.get("probe_table"), encoders=c["encoders"],
        lineage=Lineage.from_dict(c["lineage"]) if "lineage" in c else None)


def _folder_at(model_dir: str | os.PathLike, storage: Mapping[str, str] | None) -> Artifacts:
    """A checkpoint folder by its path or object-store URI; `storage`: the store's non-secret options."""
    return Artifacts.at(location(os.fspath(model_dir)), storage)


def read_card(model_dir: str | os.PathLike, storage: Mapping[str, str] | None = None) -> tuple[dict, ModelCard]:
    """Parse card.json (and selection.json) of a folder or object-store URI; refuse a card whose content does not
    hash to its version."""
    return _read_card(_folder_at(model_dir, storage))


def _read_card(folder: Artifacts) -> tuple[dict, ModelCard]:
    raw = folder.read(CARD)
    if raw is None:
        raise CheckpointError(f"{folder.uri()} is not a model checkpoint: {CARD} is missing")
    path = folder.uri(CARD)
    try:
        data = json.loads(raw)
        sel = folder.read(SELECTION)
        selection = json.loads(sel) if sel is not None else {}
        card = _card_from_json(data, selection)
        expected = version_of(data["weights_tensor_sha256"], data["content"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is corrupt or truncated ({type(err).__name__}: {err}); "
                              "re-register the model (lfm pretrain)") from None
    if data.get("format") not in READABLE_FORMATS:
        raise CheckpointError(f"{path}: checkpoint format {data.get('format')!r} is not one of {READABLE_FORMATS}")
    if card.model_version != expected:
        raise CheckpointError(f"{path}: the card's content hashes to {expected}, not to its model_version "
                              f"{card.model_version}: the card was edited; re-register the model")
    return data, card


def load_checkpoint(model_dir: str | os.PathLike, schema: DataSchema | None = None,
                    storage: Mapping[str, str] | None = None) -> Checkpoint:
    """Verify and load a checkpoint folder (a path, or an object-store URI reached with the non-secret options
    `storage`) into a frozen eval-mode model; `schema` (if given) must match."""
    return _load(_folder_at(model_dir, storage), schema)


def _load(folder: Artifacts, schema: DataSchema | None) -> Checkpoint:
    """Every check runs on the bytes read once, so the weights verified are the weights loaded."""
    import torch

    from models.encoders import FeatureEncoders
    from models.lfm import build_lfm

    data, card = _read_card(folder)
    if schema is not None:
        check_schema(card, schema)
    wpath = folder.uri(WEIGHTS)
    weights = folder.read(WEIGHTS)
    if weights is None:
        raise CheckpointError(f"{folder.uri()}: {WEIGHTS} is missing; the checkpoint is incomplete")
    if hashlib.sha256(weights).hexdigest() != data["weights_file_sha256"]:
        raise CheckpointError(f"{wpath} does not match the sha256 recorded in {CARD}: the weights file is "
                              "corrupt, truncated or was replaced; restore it or re-register the model")
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise CheckpointError(f"{wpath} cannot be read as tensor-only weights ({type(err).__name__}); "
                              "restore it or re-register the model") from None
    if not isinstance(state, dict) or tensor_hash(state) != data["weights_tensor_sha256"]:
        raise CheckpointError(f"{wpath}: the tensors do not hash to the value recorded in {CARD}; refusing it")
    if data["format"] == 1:
        state = _format_1_names(state)
    encoders = FeatureEncoders.from_dict(data["content"]["encoders"])
    model = build_lfm(encoders, card.schema, card.model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{wpath}: weights do not fit the architecture in {CARD} ({str(err)[:200]})") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Checkpoint(model=model, encoders=encoders, card=card)


_FORMAT_1_DNN = re.compile(r"^mixing\.dnn\.(\d+)\.")


def _format_1_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Format 1 weights under today's names: DNN layer i of the mixing tower is `Mlp` child 2i."""
    def rename(key: str) -> str:
        return _FORMAT_1_DNN.sub(lambda m: f"mixing.dnn.{2 * int(m.group(1))}.", key, count=1)

    return {rename(k): v for k, v in state.items()}


def check_schema(card: ModelCard, schema: DataSchema) -> None:
    if card.schema == schema:
        return
    a, b = card.schema.model_dump(), schema.model_dump()
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    raise SchemaMismatch(f"model {card.model_version} was trained on a different data schema (differs in "
                         f"{diff}); use the config it was trained with or pretrain a model for this schema")


class Registry:
    """Model versions under `cfg.registry.path`: a local folder, or an object-store URI reached with
    `cfg.storage` (credentials from the AWS environment variables)."""

    def __init__(self, cfg: LfmConfig) -> None:
        self.cfg = cfg
        self.files = Artifacts.at(cfg.location(cfg.registry.path), cfg.storage.object_store_options())
        self.root: Path | str = self.files.address()  # a local folder's Path, or the object-store URI

    # ---- writing ----
    def register(self, model: Lfm, encoders: FeatureEncoders, metrics: dict,
                 lineage: Lineage | None = None) -> ModelCard:
        """Save a trained model; idempotent (the same content gives the same version and folder)."""
        import torch

        state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        content = content_of(model, encoders, self.cfg.schema, lineage)
        wh = tensor_hash(state)
        version = version_of(wh, content)
        if not self.files.published(version, CARD):
            buffer = io.BytesIO()
            torch.save(state, buffer)
            weights = buffer.getvalue()
            data = {"format": FORMAT, "model_version": version, "weights_tensor_sha256": wh,
                    "weights_file_sha256": hashlib.sha256(weights).hexdigest(), "content": content,
                    "metrics": json.loads(json.dumps(metrics, allow_nan=False)),
                    "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")}
            card = json.dumps(data, indent=1, sort_keys=True).encode()
            self.files.publish(version, {WEIGHTS: weights, CARD: card}, marker=CARD)
        return self.card(version)

    def set_selected_layer(self, version: str, layer: str, probe_table: list | dict | None = None) -> ModelCard:
        """Record the measured CR extraction layer (outside the hash: choosing a layer is not a new model)."""
        card = self.card(version)
        if layer not in card.cr_points:
            raise BadInput(f"layer {layer!r} is not a CR point of model {version}; choose one of "
                           f"{list(card.cr_points)}")
        selection = {"selected_cr_layer": layer, "probe_table": probe_table}
        self._folder(version).put(SELECTION, json.dumps(selection, indent=1, sort_keys=True, default=str).encode())
        return self.card(version)

    # ---- reading ----
    def _folder(self, version: str) -> Artifacts:
        check_model_version(version)
        if not self.files.published(version, CARD):
            raise NoModel(f"model version {version} is not in the registry {self.root}; see `lfm models list`")
        return self.files.child(version)

    def list(self) -> list[ModelCard]:
        """Every readable version, oldest first (unreadable folders are skipped; `card` explains them)."""
        cards = []
        for name in self.files.folders(CARD):
            try:
                cards.append(_read_card(self.files.child(name))[1])
            except CheckpointError as err:
                log.warning("skipping %s: %s", self.files.uri(name), err)
        return sorted(cards, key=lambda c: (c.created_at, c.model_version))

    def card(self, version: str) -> ModelCard:
        folder = self._folder(version)
        card = _read_card(folder)[1]
        if card.model_version != version:
            raise CheckpointError(f"{folder.uri()} holds model {card.model_version}, not {version}: the folder was "
                                  "renamed")
        return card

    def latest(self) -> ModelCard:
        cards = self.list()
        if not cards:
            raise NoModel(f"no model in the registry {self.root}: run `lfm pretrain` first")
        return cards[-1]

    def resolve(self, version: str | None) -> ModelCard:
        """The card of `version`, or of the latest registered version when None: the one place that picks a model.

        Verified without loading the weights: the card's content hashes to its version and its data schema is
        this config's (`SchemaMismatch` otherwise); the weights are verified wherever they are loaded.
        """
        card = self.card(version) if version else self.latest()
        check_schema(card, self.cfg.schema)
        return card

    def path(self, version: str) -> Path | str:
        """The verified folder of a version for `Extractor(path, storage=cfg.storage.object_store_options())`: a
        local Path, or the object-store URI (str); integrity and schema are checked here."""
        self.load(version)
        return self._folder(version).address()

    def load(self, version: str) -> Checkpoint:
        """Load a verified model; refuses tampering and a schema other than this config's."""
        card = self.card(version)
        return _load(self._folder(card.model_version), self.cfg.schema)

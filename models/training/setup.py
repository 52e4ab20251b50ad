"""What every downstream run is built with, resolved once from the config."""
from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from lfm.config import ConfigError, LfmConfig
from lfm.config.downstream import TrainerSettings, TwoTowerSettings
from lfm.config.model import ModelSettings
from models.downstream import DownstreamSizes


@dataclass(frozen=True)
class DownstreamSetup:
    """Model widths, trainer and retrieval settings, and the field encoding of the ranker's vocabularies."""

    sizes: DownstreamSizes
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    retrieval: TwoTowerSettings = field(default_factory=TwoTowerSettings)
    field_encoding: ModelSettings = field(default_factory=ModelSettings)  # numeric buckets and min count

    @classmethod
    def from_config(cls, cfg: LfmConfig, **trainer_overrides: object) -> "DownstreamSetup":
        """Widths derived from the LFM's `model` (a narrower DNN), trainer and retrieval from `downstream`,
        the scratch control as wide as the IR; `trainer_overrides` are command-line options (--max-epochs ...)."""
        retrieval = cfg.downstream.retrieval
        if retrieval.scratch_dim is None:
            retrieval = retrieval.model_copy(update={"scratch_dim": cfg.model.item_tower[-1]})
        try:
            trainer = TrainerSettings.model_validate({**cfg.downstream.trainer.model_dump(), **trainer_overrides})
        except ValidationError as err:
            bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"invalid downstream trainer option ({bad}): fix the command-line value") from None
        return cls(sizes=DownstreamSizes.from_lfm(cfg.model), trainer=trainer, retrieval=retrieval,
                   field_encoding=cfg.model)

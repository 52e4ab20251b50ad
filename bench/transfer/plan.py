"""Which downstream runs the study trains: every baseline once per tab, every transfer variant once per LFM.

`none`, `none_more_data` and `iim_random` read no LFM weights or vectors (the IIM control takes only the plain
LFM's architecture and vocabularies, the same for every plain seed), so they run once per tab and downstream
seed on the reference LFM's rows; the transfer variants run per LFM (plain seeds on every tab, the other
embedding options on their tabs).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.transfer.runs import CONTROL, Job
from bench.transfer.spec import ReportSpec, Upstream
from lfm.config.model import EmbeddingVariant
from lfm.errors import LfmError
from models.training.variants import TransferRequest, TransferVariant

MORE = "+more"  # set key suffix of the none_more_data sets
NO_LAYER = "-"  # the layer field of runs that read no CR


class StudyError(LfmError):
    """A study that cannot run as asked (a used workdir, an unknown layer); the message names the fix."""


@dataclass(frozen=True)
class Lfm:
    """One pretrained LFM of the study: its version, exported CR layer, export id and number of interaction layers."""

    upstream: Upstream
    version: str
    layer: str
    export: str  # the export id of (version, layer): its training sets are stored under it
    depth: int


def tabs_of(spec: ReportSpec, up: Upstream) -> tuple[str, ...]:
    return spec.tabs if up.option is EmbeddingVariant.plain else spec.option_tabs


def main_jobs(spec: ReportSpec, lfms: list[Lfm], valid_fraction: dict[str, float]) -> list[Job]:
    ref = lfms[0]
    none = TransferRequest(TransferVariant.none)
    with_iim = any(r.variant is TransferVariant.iim for r in spec.requests(ref.depth))
    jobs = []
    for tab in spec.tabs:
        for seed in spec.seeds:
            jobs.append(Job(tab, "none", none, ref.export, seed, CONTROL, None, ref.version, NO_LAYER))
            jobs.append(Job(tab, "none_more_data", none, ref.export + MORE, seed, CONTROL, None, ref.version,
                            NO_LAYER, valid_fraction=valid_fraction[tab]))
            if with_iim:
                jobs.append(Job(tab, "iim_random", TransferRequest(TransferVariant.iim_random), ref.export, seed,
                                CONTROL, None, ref.version, NO_LAYER))
        for lfm in lfms:
            if tab in tabs_of(spec, lfm.upstream):
                up = lfm.upstream
                jobs += [Job(tab, req.label, req, lfm.export, seed, up.option.value, up.seed, lfm.version, lfm.layer)
                         for req in spec.requests(lfm.depth) for seed in spec.seeds]
    return jobs


def sweep_layers(chosen: tuple[str, ...], points: list[str], selected: str) -> list[str]:
    """The CR layers a downstream sweep re-exports besides the selected one (`all`: every point)."""
    chosen = tuple(points) if chosen == ("all",) else chosen
    unknown = [p for p in chosen if p not in points]
    if unknown:
        raise StudyError(f"--layers {unknown} are not CR points of the model; choose from {points}")
    return [p for p in chosen if p != selected]


def sweep_jobs(spec: ReportSpec, ref: Lfm, export: str, layer: str) -> list[Job]:
    """The CR-only gate at one CR layer (its export's sets) on every tab, at the main pass's seeds (every layer at
    the same ones)."""
    up = ref.upstream
    return [Job(tab, "cr_gate", TransferRequest(TransferVariant.cr_gate), export, seed, up.option.value, up.seed,
                ref.version, layer, sweep=True) for tab in spec.tabs for seed in spec.seeds]

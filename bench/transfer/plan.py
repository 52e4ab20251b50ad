"""Which downstream runs the study trains: every baseline once per tab, every transfer variant once per LFM.

`none`, `none_more_data`, `iim_random` and the production model `prod` read no LFM vectors (the IIM control takes
only the reference lineage's IIM checkpoint's architecture and vocabularies), so they run once per tab and
downstream seed on the reference LFM's rows; the transfer variants run per lineage (plain seeds on every tab, the
other embedding options on their tabs); the frozen-LFM rows run on the frozen export's rows; `prod` with vectors
runs on the reference lineage's rows.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.transfer.runs import CONTROL, Job
from bench.transfer.spec import ReportSpec, Upstream
from lfm.config.model import EmbeddingVariant
from lfm.errors import LfmError
from models.training.variants import TransferRequest, TransferVariant

MORE = "+more"  # set key suffix of the none_more_data sets
RATES = "+rates"  # set key suffix of sets with the click-rate features (prod)
NO_LAYER = "-"  # the layer field of runs that read no CR
FROZEN = "frozen"  # the option of the frozen-LFM rows
PROD = "prod"  # none_more_data's fields and days, plus the user's and item's smoothed click rates
PROD_WINDOW = "prod_window"  # prod on the longest window with vectors alone: the rows prod + vectors train on


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
    frozen: bool = False  # the base exported without updates (the frozen-LFM protocol)
    checkpoint: str | None = None  # the IIM's checkpoint: the lineage's version trained before the test days

    @property
    def option(self) -> str:
        return FROZEN if self.frozen else self.upstream.option.value


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
            jobs += production_jobs(spec, ref, tab, seed, valid_fraction[tab])
            if with_iim:
                jobs.append(Job(tab, "iim_random", TransferRequest(TransferVariant.iim_random), ref.export, seed,
                                CONTROL, None, ref.version, NO_LAYER, checkpoint=ref.checkpoint))
        for lfm in lfms:
            if lfm.frozen:
                requests = [TransferRequest(v) for v in spec.frozen]
            elif tab in tabs_of(spec, lfm.upstream):
                requests = spec.requests(lfm.depth)
            else:
                continue
            jobs += [Job(tab, req.label, req, lfm.export, seed, lfm.option, lfm.upstream.seed, lfm.version,
                         lfm.layer, checkpoint=lfm.checkpoint) for req in requests for seed in spec.seeds]
    return jobs


def production_jobs(spec: ReportSpec, ref: Lfm, tab: str, seed: int, valid_fraction: float) -> list[Job]:
    """`prod` on its own days, and on the window alone without and with each production variant's vectors."""
    none = TransferRequest(TransferVariant.none)
    jobs = [Job(tab, PROD, none, ref.export + MORE + RATES, seed, CONTROL, None, ref.version, NO_LAYER,
                valid_fraction=valid_fraction, click_rates=True)]
    if spec.production:
        jobs.append(Job(tab, PROD_WINDOW, none, ref.export + RATES, seed, CONTROL, None, ref.version, NO_LAYER,
                        click_rates=True))
    jobs += [Job(tab, f"{PROD}+{v.value}", TransferRequest(v), ref.export + RATES, seed, ref.option,
                 ref.upstream.seed, ref.version, ref.layer, click_rates=True) for v in spec.production]
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

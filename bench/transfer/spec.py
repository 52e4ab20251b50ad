"""What the transfer report measures: its windows, upstream LFMs, variants and seeds, from the command line.

Defaults (KuaiRand-Pure, 2022-04-25..05-08), the production protocol (docs/transfer_report.md):
- the LFM is a lineage: a base trains on 04-25..04-26 and early-stops on 04-27; `run-daily` with daily updates
  (`updates.every_days: 1`, 2 passes over each new day) then exports 04-28..05-07, each day D by the version
  trained through D-1 (04-28 by the base, 04-29 by the base continued on 04-28, and so on); day D's snapshot is
  stamped D+1 00:00, so the 04-28 export is what the 04-29 rows read and 05-07 is the last one a test row reads;
- `select-layer` probes the base on the first two export days (state warmed up on the base's own days), never on a
  test day, and the lineage exports the layer it picks;
- every downstream model trains on the same longest window with vectors, 04-29..05-06 (its chronological last
  20 % validates), and is tested on 05-07..05-08; `none_more_data` and the production model `prod` also train on
  04-25..04-28, the days before any time-correct vector exists;
- the frozen-LFM protocol is one row: the lineage's base, never updated, exported over the same days.
Three lineages (their bases seeded 0, 1, 2) and two downstream seeds keep the whole run within 90 minutes
(`DROPPED` says what that leaves out).
"""
from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from lfm.config.model import EmbeddingVariant
from lfm.names import BadInput, parse_days
from models.training.variants import TransferRequest, TransferVariant

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "kuairand-pure"
DEFAULT_TABS = ("0", "4", "6", "2", "1")
DEFAULT_OPTION_TABS = ("1", "0")  # the big tab and the small tab with the most test rows
MAIN_VARIANTS = (TransferVariant.ur_linear, TransferVariant.ur_ir_mlp, TransferVariant.ur_ir_cr_mlp,
                 TransferVariant.iim)
DEFAULT_KS = (-2,)  # IIM depth: every interaction layer but the last (k=4 of 5 on the default LFM)
DROPPED = {
    "ur_mlp": "below ur_ir_mlp on all 5 tabs (UR through the MLP adapter; IR adds to it everywhere)",
    "ur_ir_cr_gate": "below ur_ir_cr_mlp on all 5 tabs (the same vectors, CR through gates instead of MLPs)",
    "cr_gate": "below ur_ir_cr_mlp on all 5 tabs (it isolated CR for the layer sweep; the probe chooses the layer, "
               "and `--layers` still runs a downstream sweep)",
    "iim_k0..k3, iim_k5": "iim_k4 was the best depth on 3 of 5 tabs and within 0.004 AUC of the best on the others",
    "retrieval_scratch, retrieval_ur, retrieval_cr_user": "below ur_ir_cr_mlp on all 5 tabs as rankers (their job "
                                                          "is recall, measured by `lfm train-downstream`)",
    "STEM and Crocodile LFMs": "each LFM is now a lineage of 9 daily updates and 10 gated exports (about 10 "
                               "minutes, and its downstream runs): three plain lineages for the seed spread fit the "
                               "90-minute budget, two more options do not (`--options stem,crocodile` runs them)",
}
QUICK_TABS = 2
PRODUCTION = (TransferVariant.ur_ir_mlp, TransferVariant.ur_ir_cr_mlp)  # prod with UR/IR, and with UR/IR/CR


@dataclass(frozen=True)
class Upstream:
    """One pretrained LFM: its embedding option and its seed."""

    option: EmbeddingVariant
    seed: int

    @property
    def label(self) -> str:
        return f"{self.option.value} seed {self.seed}"


@dataclass(frozen=True)
class Windows:
    pretrain: tuple[dt.date, ...]  # the lineage's base: training days
    pretrain_valid: tuple[dt.date, ...]  # the base's early-stopping days
    probe: tuple[dt.date, ...]  # select-layer's probe days (on the base, after its days, before the test days)
    probe_warmup: int
    export: tuple[dt.date, ...]  # run-daily's days, each by the version trained through the day before
    train: tuple[dt.date, ...]
    test: tuple[dt.date, ...]
    more: tuple[dt.date, ...]  # the extra training days of none_more_data and prod

    @property
    def protect(self) -> tuple[dt.date, dt.date]:
        """The test days: no choice made before the downstream runs (the CR layer) may look at them."""
        return self.test[0], self.test[-1]

    @property
    def base_through(self) -> dt.date:
        return max(self.pretrain + self.pretrain_valid)

    def check(self) -> None:
        """Refuse windows that would leak or leave rows without vectors, naming the fix."""
        day = dt.timedelta(days=1)
        if self.test[0] <= self.train[-1]:
            raise BadInput(f"--test {_span(self.test)} must come after --train {_span(self.train)}")
        if self.export[0] <= self.base_through:
            raise BadInput(f"--export {_span(self.export)} must start after the base's days (through "
                           f"{self.base_through}): a day is exported by a version that has not seen it")
        if self.probe[0] <= self.base_through or self.probe[-1] >= self.test[0]:
            raise BadInput(f"--probe {_span(self.probe)} must lie after the base's days (through "
                           f"{self.base_through}) and before --test {_span(self.test)}")
        if self.more and self.more[-1] >= self.train[0]:
            raise BadInput(f"--more-data {_span(self.more)} must end before --train starts ({self.train[0]})")
        needed = (self.train[0] - day, self.test[-1] - day)
        if self.export[0] > needed[0] or self.export[-1] < needed[1]:
            raise BadInput(f"--export {_span(self.export)} must cover {needed[0]}..{needed[1]}: day D's rows read "
                           "the snapshot exported on D-1")

    def text(self) -> dict[str, str]:
        return {"LFM base (train)": _span(self.pretrain),
                "LFM base (early stop)": _span(self.pretrain_valid),
                "LFM lineage": f"daily updates: the version that exports day D continued on D-1 (updates over "
                               f"{_span(self.export[:-1])})",
                "layer probe (select-layer, on the base)": f"{_span(self.probe)}, state warmed up on "
                                                           f"{self.probe_warmup} day(s) before",
                "run-daily exports": f"{_span(self.export)} (the first day starts the CR chain cold)",
                "downstream train (every model)": f"{_span(self.train)} (its last 20 % of rows by time validates)",
                "downstream test": _span(self.test),
                "none_more_data and prod add": _span(self.more)}


def _span(days) -> str:
    return f"{days[0]}..{days[-1]}" if days else "-"


@dataclass(frozen=True)
class ReportSpec:
    source: Path
    workdir: Path
    windows: Windows
    tabs: tuple[str, ...]
    task: str
    seeds: tuple[int, ...]  # downstream seeds per (variant, LFM)
    lfm_seeds: tuple[int, ...]  # plain LFMs
    options: tuple[EmbeddingVariant, ...]  # other LFM options, seed lfm_seeds[0], on `option_tabs`
    option_tabs: tuple[str, ...]
    variants: tuple[TransferVariant, ...]
    ks: tuple[int, ...]  # IIM depths; negative counts from the end (-1 = every interaction layer)
    layers: tuple[str, ...]  # downstream cr_gate sweep over these CR layers besides the selected one; () = none
    rounds: int  # bootstrap resamples
    out_md: Path
    cadence: int = 1  # updates.every_days of the lineages
    update_epochs: int = 2  # updates.epochs
    frozen: tuple[TransferVariant, ...] = (TransferVariant.ur_ir_cr_mlp,)  # the frozen-LFM rows; () = none
    production: tuple[TransferVariant, ...] = PRODUCTION  # what `prod` adds vectors through
    quick: bool = False
    max_epochs: int | None = None
    threads: int = 1  # torch threads per downstream run
    jobs: int | None = None  # downstream runs side by side, one process each (None: cores / threads)
    resume: bool = False

    @property
    def out_png(self) -> Path:
        return self.out_md.with_suffix(".png")

    @property
    def out_json(self) -> Path:
        return self.out_md.with_suffix(".json")

    @property
    def out_scores(self) -> Path:
        """Per-row test scores of every run (ranks) and the test labels: every cell can be recomputed."""
        return self.out_md.with_suffix(".scores.npz")

    @property
    def upstreams(self) -> list[Upstream]:
        plain = [Upstream(EmbeddingVariant.plain, s) for s in self.lfm_seeds]
        return plain + [Upstream(o, self.lfm_seeds[0]) for o in self.options]

    @property
    def reference(self) -> Upstream:
        """The LFM whose feature service supplies the rows of the runs that read no LFM (none, priors)."""
        return self.upstreams[0]

    def requests(self, depth: int) -> list[TransferRequest]:
        """The transfer variants, with the IIM's depths resolved against the LFM's `depth` interaction layers."""
        out = []
        for v in self.variants:
            if v is TransferVariant.iim:
                ks = dict.fromkeys(k if k >= 0 else depth + 1 + k for k in self.ks)
                out += [TransferRequest(v, k=k) for k in ks if 0 <= k <= depth]
            else:
                out.append(TransferRequest(v))
        return out


def _choices(value: str, kind, name: str, refused: tuple = ()) -> tuple:
    out = []
    for v in (x.strip() for x in value.split(",") if x.strip()):
        try:
            item = kind(v)
        except ValueError:
            item = None
        if item is None or item in refused:
            raise BadInput(f"{name} {v!r} is not one of {[k.value for k in kind if k not in refused]}")
        out.append(item)
    return tuple(dict.fromkeys(out))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.transfer_report", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="The transfer report: paired test-row intervals of every transfer variant against no transfer, "
                    "UR linear, a click-rate prior and the vanilla model on more data, over several LFM seeds.",
        epilog="A subset: --tabs 1 --lfm-seeds 1 --options none --variants ur_ir_cr_mlp (a resumed --workdir "
               "reuses what an earlier run built: --resume).")
    a = p.add_argument
    a("--config", help="base lfm.yaml (schema, model, training settings); paths go under --workdir")
    a("--source", type=Path, default=DEFAULT_SOURCE, help="KuaiRand-layout folder")
    a("--workdir", type=Path, default=REPO / "bench" / "out" / "transfer",
      help="folder for this run's lakehouse, registry, Feast repo, training sets and per-run scores")
    a("--resume", action="store_true", help="reuse what an earlier run built in --workdir (models, exports, "
                                            "finished runs) instead of requiring an empty one")
    g = p.add_argument_group("windows (FIRST..LAST or a comma list)")
    g.add_argument("--pretrain", default="2022-04-25..2022-04-26", help="the lineage base's training days")
    g.add_argument("--pretrain-valid", default="2022-04-27", help="the base's early-stopping days")
    g.add_argument("--probe", help="select-layer probe days on the base (default: the first two export days)")
    g.add_argument("--probe-warmup", type=int, default=2, help="CR state warm-up days before the first probe day")
    g.add_argument("--export", default="2022-04-28..2022-05-07",
                   help="days run-daily exports, each by the lineage's version trained through the day before")
    g.add_argument("--updates-every", type=int, default=1, help="the lineage's cadence (updates.every_days)")
    g.add_argument("--update-epochs", type=int, default=2,
                   help="passes over the new days per update (updates.epochs): a KuaiRand day is about 14k rows, "
                        "4 optimizer steps per pass at the default batch size")
    g.add_argument("--train", default="2022-04-29..2022-05-06", help="downstream training days (every model)")
    g.add_argument("--test", default="2022-05-07..2022-05-08", help="downstream test days")
    g.add_argument("--more-data", help="extra training days of none_more_data and prod (default: from the base's "
                                       "first day to the day before --train)")
    g = p.add_argument_group("what runs (a subset for a quick look)")
    g.add_argument("--tabs", default=",".join(DEFAULT_TABS), help="target scenarios, comma list")
    g.add_argument("--variants", default=",".join(v.value for v in MAIN_VARIANTS),
                   help="transfer variants (models.training.variants.TransferVariant); the baselines none, "
                        "none_more_data, ctr_user/ctr_item/ctr_prior (and iim_random with iim) always run")
    g.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)),
                   help="IIM depths, comma list; negative counts from the end (-1 = every interaction layer)")
    g.add_argument("--frozen", default=TransferVariant.ur_ir_cr_mlp.value,
                   help="variants trained on the frozen-LFM export (the first lineage's base, never updated); "
                        "'none'")
    g.add_argument("--production", default=",".join(v.value for v in PRODUCTION),
                   help="the production model `prod` (none_more_data's fields plus the user's and item's smoothed "
                        "click rates) is also trained with these variants' vectors; 'none'")
    g.add_argument("--lfm-seeds", type=int, default=3, help="plain LFM lineages, their bases seeded 0..N-1")
    g.add_argument("--options", default="none",
                   help="other LFM embedding options (model.embedding), one lineage each on --option-tabs; 'none'")
    g.add_argument("--option-tabs", default=",".join(DEFAULT_OPTION_TABS), help="tabs of the LFM options")
    g.add_argument("--seeds", type=int, default=2,
                   help="downstream seeds 0..N-1 per variant and LFM (a third adds half again to the downstream "
                        "runs, the largest phase: past the 90-minute budget)")
    g.add_argument("--layers", default="none", help="downstream cr_gate sweep over these CR layers besides the "
                                                   "selected one (comma list, 'all'; each costs one export per day)")
    g.add_argument("--task", default="is_click")
    g.add_argument("--quick", action="store_true", help="two tabs, one seed, one LFM, no options: not a measurement")
    g = p.add_argument_group("statistics and resources")
    g.add_argument("--rounds", type=int, default=1000, help="paired bootstrap resamples of the test rows")
    g.add_argument("--max-epochs", type=int, help="override the downstream epoch cap")
    g.add_argument("--threads", type=int, default=1, help="torch threads per downstream run: two 1-thread runs side "
                                                          "by side finish about twice the runs of one 2-thread run")
    g.add_argument("--jobs", type=int, help="downstream runs side by side, one process each (default: the cores "
                                            "this process may use / --threads)")
    g.add_argument("--out", type=Path, help="markdown output (default docs/transfer_report.md; --quick: "
                                            "bench/out/transfer_report_quick.md, so it never replaces the report)")
    return p


def parse_args(argv: list[str] | None = None) -> tuple[ReportSpec, argparse.Namespace]:
    a = parser().parse_args(argv)
    days = parse_days
    pretrain, train = tuple(days(a.pretrain)), tuple(days(a.train))
    more = tuple(days(a.more_data)) if a.more_data else tuple(
        pretrain[0] + dt.timedelta(days=i) for i in range((train[0] - pretrain[0]).days))
    export = tuple(days(a.export))
    windows = Windows(pretrain=pretrain, pretrain_valid=tuple(days(a.pretrain_valid)),
                      probe=tuple(days(a.probe)) if a.probe else export[:2], probe_warmup=a.probe_warmup,
                      export=export, train=train, test=tuple(days(a.test)), more=more)
    windows.check()
    tabs = tuple(t.strip() for t in a.tabs.split(",") if t.strip())
    options = () if a.options == "none" else _choices(a.options, EmbeddingVariant, "--options",
                                                        (EmbeddingVariant.plain,))
    variants = _choices(a.variants, TransferVariant, "--variants",
                        (TransferVariant.none, TransferVariant.iim_random))
    frozen = () if a.frozen == "none" else _choices(a.frozen, TransferVariant, "--frozen")
    production = () if a.production == "none" else _choices(a.production, TransferVariant, "--production",
                                                              (TransferVariant.none,))
    layers = () if a.layers == "none" else tuple(x.strip() for x in a.layers.split(",") if x.strip())
    seeds, lfm_seeds = tuple(range(max(1, a.seeds))), tuple(range(max(1, a.lfm_seeds)))
    option_tabs = tuple(t.strip() for t in a.option_tabs.split(",") if t.strip())
    if a.quick:
        tabs, seeds, lfm_seeds, options, layers = tabs[:QUICK_TABS], seeds[:1], lfm_seeds[:1], (), ()
        frozen = ()
    out = (a.out or (REPO / "bench" / "out" / "transfer_report_quick.md" if a.quick else
                     REPO / "docs" / "transfer_report.md")).resolve()
    spec = ReportSpec(source=a.source.resolve(), workdir=a.workdir.resolve(), windows=windows, tabs=tabs,
                      task=a.task, seeds=seeds, lfm_seeds=lfm_seeds, options=options,
                      option_tabs=tuple(t for t in option_tabs if t in tabs), variants=variants,
                      ks=tuple(int(k) for k in a.ks.split(",") if k.strip()), layers=layers, rounds=a.rounds,
                      cadence=max(1, a.updates_every), update_epochs=max(1, a.update_epochs), frozen=frozen, production=production,
                      out_md=out, quick=a.quick, max_epochs=a.max_epochs, threads=a.threads, jobs=a.jobs,
                      resume=a.resume)
    return spec, a

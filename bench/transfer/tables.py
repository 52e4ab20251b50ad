"""The report's markdown: verdicts first, then every lift with its interval, the spreads, the choices made."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.transfer.runs import CONTROL
from bench.transfer.spec import DROPPED, ReportSpec
from bench.transfer.stats import CONFIDENCE, Interval
from bench.transfer.summary import FROZEN, LINEAR, PLAIN, PROD, PROD_WINDOW, Verdict, segment_comparisons
from models.training.variants import TransferVariant

UR_IR_CR = TransferVariant.ur_ir_cr_mlp.value
BIG_TAB = "1"  # the issue asks for UR+IR+CR over UR linear on the big tab


@dataclass
class Context:
    """What the markdown names besides the runs: the command, the LFMs, the layer choices, the priors, time."""

    spec: ReportSpec
    command: str
    upstreams: list[dict]  # label, version, layer, valid score
    selections: list[tuple[str, str]]  # (LFM label, probe table markdown with its days)
    priors: dict[str, dict]  # tab -> chosen parameters and validation AUCs
    phases: dict[str, float]
    total_s: float
    jobs: int
    threads: int
    resumed: bool = False
    notes: list[str] = field(default_factory=list)


def fmt(x: Interval | None, digits: int = 4) -> str:
    """`+0.0123 [+0.0050, +0.0190] *`; blank where there is no lift (no reference, or a frame's NaN filler)."""
    if not isinstance(x, Interval) or not np.isfinite(x.estimate):
        return ""
    star = " **\\***" if x.excludes_zero else ""
    return f"{x.estimate:+.{digits}f} [{x.low:+.{digits}f}, {x.high:+.{digits}f}]{star}"


def word(x: Interval | None) -> str:
    if not isinstance(x, Interval):
        return "not measured"
    if not x.excludes_zero:
        return "indistinguishable (the interval includes 0)"
    return "beats it" if x.estimate > 0 else "loses to it"


def verdict_lines(verdicts: list[Verdict], summary: pd.DataFrame) -> list[str]:
    lines = []
    for v in verdicts:
        lines.append(f"- **tab {v.tab}**: best transfer variant by validation AUC `{v.best}`; vs `{PROD}` (the "
                     f"strongest no-transfer model) {fmt(v.vs_prod)}: {word(v.vs_prod)}; vs `ctr_prior` "
                     f"{fmt(v.vs_prior)}: {word(v.vs_prior)}; vs `none_more_data` {fmt(v.vs_more)}: "
                     f"{word(v.vs_more)}.")
        for variant, (vs_prod, vs_window) in v.prod_vectors.items():
            lines.append(f"  - adding vectors to prod, `{variant}`: vs `{PROD}` {fmt(vs_prod)}: {word(vs_prod)}; "
                         f"vs `{PROD_WINDOW}` (the same rows) {fmt(vs_window)}: {word(vs_window)}.")
        for variant, x in v.vs_frozen.items():
            lines.append(f"  - the frozen LFM: `{variant}` from the frozen base minus the lineage's {fmt(x)}: "
                         + {"beats it": "the frozen LFM is better", "loses to it": "the lineage is better"}.get(
                             word(x), word(x)) + ".")
    big = summary[(summary.tab == BIG_TAB) & (summary.variant == UR_IR_CR) & (summary.option == PLAIN)]
    if len(big):
        x = big["vs ur_linear"].iloc[0]
        side = "excludes" if isinstance(x, Interval) and x.excludes_zero else "includes"
        lines.append(f"- **tab {BIG_TAB}**: UR+IR+CR (`{UR_IR_CR}`) over `{LINEAR}`: {fmt(x)} (the interval {side} 0).")
    return lines


def production_table(summary: pd.DataFrame, tabs: tuple[str, ...]) -> list[str]:
    """prod and prod with vectors: AUC, and lifts over prod and over prod on the window alone."""
    s = summary[summary.variant.str.startswith(PROD)]
    lines = ["| model | " + " | ".join(f"tab {t} AUC | vs {PROD} | vs {PROD_WINDOW}" for t in tabs) + " |",
             "|---|" + "---|---|---|" * len(tabs)]
    for variant in dict.fromkeys(s.variant):
        cells = []
        for tab in tabs:
            hit = s[(s.tab == tab) & (s.variant == variant)]
            x = hit.iloc[0] if len(hit) else None
            cells += [f"{x.auc:.4f}", fmt(x.get("vs prod")), fmt(x.get("vs prod_window"))] if x is not None else \
                ["", "", ""]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def segment_lines(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return ["(no segments: no transfer variant ran)"]
    columns = [c for c, _, _ in segment_comparisons("")]
    lines = ["| tab | segment | test rows | click share | " + " | ".join(columns) + " |",
             "|---|---|---|---|" + "---|" * len(columns)]
    for _, r in table.iterrows():
        lines.append(f"| {r.tab} (best `{r.best}`) | {r.segment} | {r.rows:,} | {r.positives:.3f} | "
                     + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return lines


def lift_table(summary: pd.DataFrame, column: str, tabs: tuple[str, ...], options: tuple[str, ...]) -> list[str]:
    s = summary[summary.option.isin(options)]
    keys = list(dict.fromkeys(zip(s.variant, s.option)))
    lines = ["| variant | " + " | ".join(f"tab {t}" for t in tabs) + " |", "|---|" + "---|" * len(tabs)]
    for variant, option in keys:
        cells = []
        for tab in tabs:
            hit = s[(s.tab == tab) & (s.variant == variant) & (s.option == option)]
            cells.append(fmt(hit[column].iloc[0]) if len(hit) and column in hit else "")
        if any(cells):
            lines.append(f"| {_name(variant, option)} | " + " | ".join(cells) + " |")
    return lines


MAIN = (PLAIN, CONTROL, FROZEN)  # the options of the main tables (the other embedding options have their own)


def _name(variant: str, option: str) -> str:
    return variant if option in (PLAIN, CONTROL) else f"{variant} ({option})"


def metric_table(summary: pd.DataFrame, tabs: tuple[str, ...]) -> list[str]:
    s = summary[summary.option.isin(MAIN)]
    lines = ["| variant | runs/tab | " + " | ".join(f"tab {t} AUC / GAUC" for t in tabs) + " |",
             "|---|---|" + "---|" * len(tabs)]
    for variant, option in dict.fromkeys(zip(s.variant, s.option)):
        hits = [s[(s.tab == tab) & (s.variant == variant) & (s.option == option)] for tab in tabs]
        cells = [f"{h.auc.iloc[0]:.4f} / {h.gauc.iloc[0]:.4f}" if len(h) else "" for h in hits]
        first = next(h.iloc[0] for h in hits if len(h))
        runs = f"{first.runs} ({first.lfm_seeds} LFMs)" if first.lfm_seeds else str(first.runs)
        lines.append(f"| {_name(variant, option)} | {runs} | " + " | ".join(cells) + " |")
    return lines


def spread_table(spread: pd.DataFrame, lfm_seeds: tuple[int, ...]) -> list[str]:
    if spread.empty:
        return ["(one plain LFM seed: no spread to report)"]
    seeds = [f"lfm seed {s}" for s in lfm_seeds]
    lines = ["| tab | variant | " + " | ".join(seeds) + " | sd | range |", "|---|---|" + "---|" * (len(seeds) + 2)]
    for _, r in spread.iterrows():
        lines.append(f"| {r.tab} | {r.variant} | " + " | ".join(fmt(r[s]) for s in seeds)
                     + f" | {r.sd:.4f} | {r['range']:.4f} |")
    return lines


def option_table(summary: pd.DataFrame, spec: ReportSpec) -> list[str]:
    tabs = spec.option_tabs
    s = summary[summary.tab.isin(tabs) & ~summary.option.isin((CONTROL,))]
    lines = ["| variant | LFM | " + " | ".join(f"tab {t} AUC | vs none | vs plain LFM" for t in tabs) + " |",
             "|---|---|" + "---|---|---|" * len(tabs)]
    for variant in dict.fromkeys(s.variant):
        for option in dict.fromkeys(s.option):
            cells = []
            for tab in tabs:
                hit = s[(s.tab == tab) & (s.variant == variant) & (s.option == option)]
                if len(hit):
                    x = hit.iloc[0]
                    cells += [f"{x.auc:.4f}", fmt(x["vs none"]), fmt(x.get("vs plain LFM"))]
                else:
                    cells += ["", "", ""]
            if any(cells):
                lines.append(f"| {variant} | {option} | " + " | ".join(cells) + " |")
    return lines


def prior_table(priors: dict[str, dict], summary: pd.DataFrame) -> list[str]:
    lines = ["| tab | user m | item m | alpha (user) | valid AUC user / item / blend | test AUC user / item / blend |",
             "|---|---|---|---|---|---|"]
    for tab, p in priors.items():
        test = [summary[(summary.tab == tab) & (summary.variant == k)].auc for k in ("ctr_user", "ctr_item",
                                                                                      "ctr_prior")]
        lines.append(f"| {tab} | {p['user_strength']:g} | {p['item_strength']:g} | {p['alpha']:.1f} | "
                     + " / ".join(f"{p['valid_auc'][k]:.4f}" for k in ("ctr_user", "ctr_item", "ctr_prior")) + " | "
                     + " / ".join(f"{t.iloc[0]:.4f}" if len(t) else "-" for t in test) + " |")
    return lines


def detail_table(summary: pd.DataFrame) -> list[str]:
    lines = ["| tab | variant | LFM | runs | LFM seeds | AUC | GAUC | valid AUC | GAUC vs none | vs own control | "
             "epochs | capped | s/run |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, x in summary.iterrows():
        lines.append(f"| {x.tab} | {x.variant} | {x.option} | {x.runs} | {x.lfm_seeds} | {x.auc:.4f} | "
                     f"{x.gauc:.4f} | {x.valid_auc:.4f} | {fmt(x.get('gauc vs none'))} | "
                     f"{fmt(x.get('vs own control'))} | {x.epochs:.1f} | {x.capped} | {x.seconds:.1f} |")
    return lines


def protocol_lines(spec: ReportSpec) -> list[str]:
    """What the windows mean: the lineage, time-correctness and its test, what the gate was told, the frozen row."""
    w = spec.windows
    return [
        "**Protocol.** The LFM keeps learning: its base trains on the first days, then `run-daily` continues it on "
        f"each day before exporting the next (`updates.every_days: {spec.cadence}`), so the vectors of day D come "
        "from the version trained through D-1, and a row of day D reads the snapshot of D-1. No vector a row reads "
        "has seen that row's label, however long the window: `tests/integration/downstream/test_downstream_report.py` "
        "recomputes every training and test row's UR and IR with each version's checkpoint and checks that the one "
        "that matches saw only earlier days. Every model, with or without vectors, trains on the same window "
        f"({w.train[0]}..{w.train[-1]}); `none_more_data` and `prod` also get {w.more[0]}..{w.more[-1]}, the days "
        "no time-correct vector exists for. The IIM starts from the version trained through the day before the "
        "test days. The lineage's CR tables run with the gate's day-over-day drift bounds off (an update moved "
        "CR's centred cosine to 0.10 on the first update day; docs/contracts.md), every other check on. The "
        "frozen-LFM protocol is kept as one row: the same base, never updated, exported over the same days (the "
        "earlier report, an LFM frozen after 4 days and downstream models on 5, is commit 5028494).", ""]


def markdown(ctx: Context, summary: pd.DataFrame, spread: pd.DataFrame, verdicts: list[Verdict],
             sweep: pd.DataFrame | None, segments: pd.DataFrame | None = None) -> str:
    spec = ctx.spec
    tabs = tuple(t for t in spec.tabs if t in set(summary.tab))
    level = f"{CONFIDENCE:.0%}"
    lines = ["# Transfer report: does a continually trained LFM transfer, against the strongest model without it?",
             "",
             f"Command: `{ctx.command}`", ""]
    if spec.quick:
        lines += ["**Quick mode** (two tabs, one seed, one LFM): a smoke test, not a measurement.", ""]
    lines += [f"Wall time: **{ctx.total_s / 60:.1f} min** on this machine"
              + (" (resumed: the sum over its invocations)" if ctx.resumed else "") + "; "
              + ", ".join(f"{k} {v:.0f}s" for k, v in ctx.phases.items())
              + f". Downstream runs {ctx.jobs} at a time, {ctx.threads} torch thread(s) each.", ""]
    lines += ["| window | days |", "|---|---|"] + [f"| {k} | {v} |" for k, v in spec.windows.text().items()] + [""]
    lines += [f"Task `{spec.task}`; downstream seeds {list(spec.seeds)} per variant and LFM; plain LFM lineages "
              f"seeded {list(spec.lfm_seeds)}; LFM options {[o.value for o in spec.options] or 'none'} on tabs "
              f"{list(spec.option_tabs)}; daily updates every {spec.cadence} day(s), {spec.update_epochs} pass(es) over "
              f"the new days each; {spec.rounds} paired bootstrap "
              "resamples of the test rows per tab.", ""]
    lines += ["| LFM | base version | versions | IIM checkpoint (seen through) | ids grown over the base | "
              "test rows whose id the IIM checkpoint never saw | base valid score | CR layer (select-layer) |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {u['label']} | `{u['version']}` | {u['versions']} | "
              f"{'`' + u['checkpoint'] + '`' if u.get('checkpoint') else 'the base'} ({u['seen_through']}) | "
              + (", ".join(f"{k} {v:,}" for k, v in u.get("grown_ids", {}).items()) or "-") + " | "
              + (", ".join(f"{k} {v:.1%}" for k, v in u.get("unseen_test_ids", {}).items()) or "-")
              + f" | {u['valid_score']:.4f} | {u['layer']} |" for u in ctx.upstreams]
    lines += [""] + [f"Note: {n}" for n in ctx.notes] + ([""] if ctx.notes else [])
    lines += protocol_lines(spec) + [""]
    lines += ["## Verdict per tab", "",
              f"Every lift is test AUC of the row's model minus the reference's, with a {level} interval from a "
              "paired bootstrap over the tab's test rows (the same resampled rows score both models; the seeds of "
              "each model, downstream and LFM, are averaged inside each resample). **\\*** = the interval excludes "
              "0. The interval is test-row noise; the LFM seed spread is reported separately below.", ""]
    lines += verdict_lines(verdicts, summary) + [""]
    lines += ["## The production question: the strongest model without the LFM, with and without its vectors", "",
              f"`{PROD}`: the tab's own fields plus the user's and the item's smoothed click rates as of the row's day "
              "(every scenario, earlier days only; the prior's strengths), trained on `none_more_data`'s days. "
              f"`{PROD_WINDOW}`: the same model on the window alone, the rows the vectors exist for. `{PROD}+X`: "
              f"`{PROD_WINDOW}` with variant X's vectors (the same rows and validation rows): its lift over "
              f"`{PROD_WINDOW}` is what the vectors add, its lift over `{PROD}` what a team gets by switching.", ""]
    lines += production_table(summary, tabs) + [""]
    if segments is not None:
        lines += ["## Where transfer pays: lifts by segment of the test rows", "",
                  "Each lift on the segment's rows alone, with its own paired bootstrap interval. Users by their "
                  "rows in the tab on days before the row's day; items by their first day anywhere in the log "
                  "(new: on one of the 3 days before the row's day, or on it). `best`: the tab's best transfer "
                  "variant by validation AUC.", ""]
        lines += segment_lines(segments) + [""]
    lines += ["## Test AUC / GAUC (mean over runs)", "",
              "GAUC: per-user AUC over the users with both labels in the test rows, weighted by their rows.", ""]
    lines += metric_table(summary, tabs) + [""]
    main = MAIN
    for column, title in (("vs prod", f"Lift over `{PROD}` (the strongest no-transfer model)"),
                          ("vs none", "Lift over `none` (the tab's own fields, no transfer)"),
                          ("vs ur_linear", "Lift over `ur_linear` (UR through one linear projection, SUM-style)"),
                          ("vs ctr_prior", "Lift over `ctr_prior` (no model: the user's and item's smoothed click "
                                           "rates over all tabs before the test window, blended)"),
                          ("vs none_more_data", "Lift over `none_more_data` (no transfer, also trained on the tab's "
                                                "rows of every day before the window)"),
                          ("gauc vs none", "GAUC lift over `none`")):
        lines += [f"## {title}", ""] + lift_table(summary, column, tabs, main) + [""]
    lines += ["## Upstream variance: lift over `none` per plain LFM seed", "",
              "Each LFM seed alone (its downstream seeds averaged), with its own paired interval; sd and range of the "
              "point lifts over LFM seeds.", ""]
    lines += spread_table(spread, spec.lfm_seeds) + [""]
    if spec.options:
        lines += ["## LFM options downstream: plain vs STEM vs Crocodile embeddings", "",
                  f"The same variants on tabs {list(spec.option_tabs)}, from one LFM per option (seed "
                  f"{spec.lfm_seeds[0]}); `vs plain LFM` pools the plain LFM's seeds. Its interval is test-row "
                  "noise only: read it against the plain LFM's seed spread above.", ""]
        lines += option_table(summary, spec) + [""]
    lines += ["## Click-rate prior: parameters chosen on validation rows", "",
              "m: pseudo-rows of the global rate the key's rate is shrunk toward; alpha: weight of the user's logit "
              "in the blend (1 - alpha on the item's). Chosen per tab by AUC on the validation rows (the "
              "chronological last 20 % of the training days), never on test rows.", ""]
    lines += prior_table(ctx.priors, summary) + [""]
    lines += ["## CR layer: chosen by the select-layer probe on the base, on days after its own and before the "
              "test days", ""]
    for label, table in ctx.selections:
        lines += [f"**{label}**", "", table, ""]
    if sweep is not None:
        lines += ["## Downstream CR layer sweep (`cr_gate`, reference LFM; mean test AUC (runs))", "",
                  "| layer | " + " | ".join(f"tab {t}" for t in sweep.columns) + " |",
                  "|---|" + "---|" * len(sweep.columns)]
        for layer, row in sweep.iterrows():
            cells = [f"{v[0]:.4f} ({v[1]})" if isinstance(v, tuple) else "" for v in row]
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Variants dropped from the earlier report, and why", ""]
    lines += [f"- `{k}`: {v}" for k, v in DROPPED.items()] + [""]
    lines += ["## Every cell", ""] + detail_table(summary) + [""]
    capped = int(summary.capped.sum())
    lines += [f"Runs that hit the epoch cap instead of early stopping: {capped}"
              + (" (raise --max-epochs before reading those rows)." if capped else " (every run early-stopped)."), ""]
    lines += ["Variants: `none` the tab's own fields; `none_more_data` the same model on more days; `prod` and "
              "`prod_window` that model with the click rates as two more fields; `ctr_user`, "
              "`ctr_item`, `ctr_prior` the click-rate prior (no model); `ur_linear` UR through one linear "
              "projection; `ur_ir_mlp` UR and IR through MLP adapters; `ur_ir_cr_mlp` + CR(u), CR(i) through MLP "
              "adapters; `iim_k{k}` the Isomorphic Interaction Module initialised from the LFM's input layers and "
              "first k interaction layers, `iim_random` the same architecture from random initialisation.", "",
              f"Files: `{spec.out_png.name}` (lifts with their intervals per tab), `{spec.out_json.name}` (one "
              f"record per (tab, variant, LFM, seed) with its AUC and GAUC), `{spec.out_scores.name}` (per tab the "
              "test labels and anonymised user codes, and per run the dense ranks of its test scores, under the "
              "record's `scores` key: AUC and GAUC depend on ranks only, so every cell recomputes exactly with "
              "`bench.transfer.stats`).", ""]
    return "\n".join(lines)

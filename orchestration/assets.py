"""The day's assets, each partitioned by day and each one group of `run-daily`'s steps (`orchestration.tasks`):

    events -> candidate (+ blocking check `gate`) -> release -> online_store -> ann_index
                 ^ candidate of D-1 (self-dependency: the CR chain)

`candidate` refreshes the day and gates it in one step: the gate is its blocking check, so a quarantined day's
`release` and everything after it never run, the step fails with the gate's own summary (each quarantined table
and expectation, the Data Docs) and is not retried; and a backfill, which launches D's candidate once D-1's is
materialized, only ever starts D after D-1 passed its gate (`orchestration.chain` refuses it otherwise).
"""
import datetime as dt

import dagster as dg

from lfm.config import LfmConfig
from lfm.names import parse_ds
from pipeline.daystate import DayState, day_state
from orchestration import records
from orchestration.chain import blocked, index_current
from orchestration.resource import LfmPlatform
from orchestration.tasks import export_spec, failing_closed, quarantine, run_group

GROUP = "lfm_daily"
GATE = "gate"
PREVIOUS_DAY = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


def _day(context: dg.AssetExecutionContext) -> dt.date:
    return parse_ds(context.partition_key)


def _export_id(cfg: LfmConfig) -> str:
    with failing_closed():  # no model registered, a bad version: the message says what to do
        return export_spec(cfg).id


def _run(context: dg.AssetExecutionContext, lfm: LfmPlatform, cfg: LfmConfig, asset: str) -> None:
    """The asset's steps of the day through the platform; what they did goes to the run's log."""
    with failing_closed():
        done = run_group(cfg, _day(context), asset, lambda: lfm.spark(cfg), context.run_id)
    context.log.info(f"{done.ds} {asset}: " + ("nothing to do, the day's records say it is done" if done.skipped
                                               else "ran " + ", ".join(s.step for s in done.steps)))


def _gate(cfg: LfmConfig, state: DayState, message: str | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=GATE, passed=state.gated, severity=dg.AssetCheckSeverity.ERROR,
                               description=message or state.story(), metadata=records.gate_metadata(cfg, state))


def build_assets(partitions: dg.PartitionsDefinition, retry: dg.RetryPolicy) -> list[dg.AssetsDefinition]:
    common = {"partitions_def": partitions, "retry_policy": retry, "group_name": GROUP}

    @dg.asset(name="events", description="ingest: the day's events in the lakehouse (from `schedule.source` "
              "when set, else ingested by something else and checked here)", **common)
    def events(context: dg.AssetExecutionContext, lfm: LfmPlatform) -> dg.MaterializeResult:
        from pipeline import runs

        cfg = lfm.config()
        _run(context, lfm, cfg, "events")
        last = runs.latest_by_step(cfg, _day(context)).get("ingest")
        return dg.MaterializeResult(metadata={"rows": last.rows} if last is not None and last.rows else {})

    @dg.asset(name="candidate", deps=[events, dg.AssetDep("candidate", partition_mapping=PREVIOUS_DAY)],
              check_specs=[dg.AssetCheckSpec(GATE, asset="candidate", blocking=True, description="the quality "
                                             "gate at exactly the candidate's Delta versions: a failure quarantines "
                                             "the day (no release, nothing served)")],
              description="refresh (+ withdraw, validate): the day's UR/IR/CR candidate, chained from D-1's, and "
              "its gate", **common)
    def candidate(context: dg.AssetExecutionContext, lfm: LfmPlatform):
        cfg, day = lfm.config(), _day(context)
        export_id = _export_id(cfg)
        why = blocked(cfg, day, export_id)
        if why:
            raise dg.Failure(description=why, metadata={"export_id": export_id}, allow_retries=False)
        try:
            _run(context, lfm, cfg, "candidate")
        except dg.Failure as err:
            gate = quarantine(err.__cause__) if err.__cause__ is not None else None
            if gate is None:
                raise
            state = day_state(cfg, day, export_id)
            yield dg.MaterializeResult(metadata=records.candidate_metadata(state),
                                       check_results=[_gate(cfg, state, str(gate))])
            hint = getattr(err.__cause__, "hint", "")  # the platform's next step (`pipeline.daily.DailyFailed`)
            raise dg.Failure(description=str(gate) + (f"\n  hint: {hint}" if hint else ""),
                             metadata=records.gate_metadata(cfg, state), allow_retries=False) from err.__cause__
        state = day_state(cfg, day, export_id)
        yield dg.MaterializeResult(metadata=records.candidate_metadata(state), check_results=[_gate(cfg, state)])

    @dg.asset(name="release", deps=[candidate], description="publish: the day's release (the Delta versions "
              "readers read), only of a candidate that passed the gate", **common)
    def release(context: dg.AssetExecutionContext, lfm: LfmPlatform) -> dg.MaterializeResult:
        cfg = lfm.config()
        _run(context, lfm, cfg, "release")
        return dg.MaterializeResult(metadata=records.release_metadata(day_state(cfg, _day(context),
                                                                                _export_id(cfg))))

    @dg.asset(name="online_store", deps=[release], description="materialize: the release in the online store "
              "(all tables or none)", **common)
    def online_store(context: dg.AssetExecutionContext, lfm: LfmPlatform) -> dg.MaterializeResult:
        cfg = lfm.config()
        _run(context, lfm, cfg, "online_store")
        return dg.MaterializeResult(metadata=records.online_metadata(cfg, day_state(cfg, _day(context),
                                                                                    _export_id(cfg))))

    @dg.asset(name="ann_index", deps=[online_store], description="the day's FAISS index over its released IR "
              "(materialize builds it; built here only when missing or stale)", **common)
    def ann_index(context: dg.AssetExecutionContext, lfm: LfmPlatform) -> dg.MaterializeResult:
        from serving.materialize import index_release
        from serving.retrieval import load_index

        cfg, day = lfm.config(), _day(context)
        state = day_state(cfg, day, _export_id(cfg))
        if not state.released:
            raise dg.Failure(description=f"{day} of export {state.export_id} is not released: nothing to index "
                             f"({state.story()})", allow_retries=False)
        if not index_current(cfg, state.export_id, day):
            with failing_closed():
                index_release(lfm.spark(cfg), cfg, state.release)
            context.log.info(f"{day} ann_index: built from the release of run {state.release.run_id}")
        index = load_index(cfg, state.export_id, day)
        return dg.MaterializeResult(metadata=records.index_metadata(state, {
            **index.meta, "items": len(index), "kind": index.kind, "dim": index.dim}))

    return [events, candidate, release, online_store, ann_index]

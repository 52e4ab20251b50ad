"""The quality gate: Great Expectations suites over each day's Delta partitions, a status table, reports.

`validation.gate.run_gate` validates one (ds, model_version); `validation.status.passed_tables` is what
`lfm materialize` asks before it loads a day. Modules: `tables` (what each table looks like), `expectations`
(named custom expectations), `suites` (suites as code, from config thresholds), `metrics` (day-level aggregates
computed in Spark), `context` (the GE file context under the lakehouse), `report` (PNG), `status`, `gate`.
"""

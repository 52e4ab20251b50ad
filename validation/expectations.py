"""Named custom Great Expectations, only for what GE's built-ins cannot check.

Each class is a real GE expectation: stored in the suite, evaluated by GE, rendered in Data Docs, and its
snake_case type is the name a failure reports (e.g. `expect_effective_rank_to_be_above`). Everything a built-in
can say is said by one in `validation.suites` (columns and scalar types on the batch's schema; the row-level
checks as range checks on their statistics, named by `validation.checks`). What is left:
- the vector's element type (GE's Spark type check only sees ArrayType, so array<double> would pass it);
- the day-level metrics (coverage, drift, collapse), computed in Spark by `validation.metrics` into the one-row
  frame and checked by the `ColumnValuesToBeBetween` subclasses below, whose column is fixed so that the type
  alone names the failure.
Importing this module registers the classes with GE, which the stored suites need before they can be loaded.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import great_expectations.expectations as gxe
from great_expectations.execution_engine import ExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation

from validation.checks import CHECK


class ExpectVectorsToBeFloatArrays(BatchExpectation):
    """The vector column is array<float> (read from the schema: no Spark job)."""

    column: str
    metric_dependencies = ("table.column_types",)
    success_keys = ("column",)
    args_keys = ("column",)

    def _validate(self, metrics: Dict, runtime_configuration: Optional[dict] = None,
                  execution_engine: Optional[ExecutionEngine] = None) -> Dict[str, Any]:
        types = {c["name"]: c["type"] for c in metrics["table.column_types"]}
        observed = types.get(self.column)
        name = observed.simpleString() if hasattr(observed, "simpleString") else str(observed)
        return {"success": name == "array<float>", "result": {"observed_value": name}}


class ExpectCoverageToBeAbove(gxe.ExpectColumnValuesToBeBetween):
    """Share of the day's active users/items (in `events`) that have a vector."""

    column: str = "coverage"


class ExpectDriftMeanCosineToBeBetween(gxe.ExpectColumnValuesToBeBetween):
    """Mean cosine between D-1 and D vectors of the entities present on both days."""

    column: str = "drift_mean_cosine"


class ExpectDriftMovedShareToBeBelow(gxe.ExpectColumnValuesToBeBetween):
    """Share of entities present on D-1 and D whose cosine fell below the `moved_cosine` threshold."""

    column: str = "drift_moved_share"


class ExpectEffectiveRankToBeAbove(gxe.ExpectColumnValuesToBeBetween):
    """Effective rank of a sample of the partition's vectors (collapse check)."""

    column: str = "effective_rank"


class ExpectInformationAbundanceToBeAbove(gxe.ExpectColumnValuesToBeBetween):
    """Information abundance sum(s)/max(s) of a sample of the partition's vectors (collapse check)."""

    column: str = "information_abundance"


class ExpectVersionMeanCosineToBeAbove(gxe.ExpectColumnValuesToBeBetween):
    """Mean cosine between one day's vectors of a lineage's new version and of the version before it."""

    column: str = "version_mean_cosine"


CUSTOM_TYPES = frozenset(cls.expectation_type for cls in (
    ExpectVectorsToBeFloatArrays, ExpectCoverageToBeAbove, ExpectDriftMeanCosineToBeBetween,
    ExpectDriftMovedShareToBeBelow, ExpectEffectiveRankToBeAbove, ExpectInformationAbundanceToBeAbove,
    ExpectVersionMeanCosineToBeAbove))


def failure_name(expectation_type: str, kwargs: dict, meta: dict | None = None) -> str:
    """The name recorded for a failed expectation: a row-level check's own name (`validation.checks`, e.g.
    `not_null(ur)`); our types name themselves; other GE built-ins add their column(s), e.g.
    `expect_column_values_to_be_of_type(ds)`."""
    if meta and meta.get(CHECK):
        return str(meta[CHECK])
    columns = kwargs.get("column_list") or ([kwargs["column"]] if kwargs.get("column") else [])
    if expectation_type in CUSTOM_TYPES or not columns:
        return expectation_type
    return f"{expectation_type}({','.join(columns)})"

"""Named custom Great Expectations for embedding exports.

Each class is a real GE expectation: it is stored in the suite, evaluated by GE on the Spark batch, rendered in
Data Docs, and its snake_case type is the name a failure reports (e.g. `expect_vector_values_to_be_finite`).
Row-level checks subclass `UnexpectedRowsExpectation`: the suite gives them a Spark SQL query over `{batch}` that
returns the offending rows (or one row holding an aggregate that is out of bounds), so the check runs in Spark
and never copies the partition to pandas. Day-level metrics (coverage, drift, collapse) are computed in Spark
by `validation.metrics` into a one-row frame and checked by the `ColumnValuesToBeBetween` subclasses below,
whose column is fixed so that the type alone names the failure. Importing this module registers the classes
with GE, which the stored suites need before they can be loaded.
"""
from __future__ import annotations

import great_expectations.expectations as gxe


class ExpectColumnTypesToMatch(gxe.UnexpectedRowsExpectation):
    """Every column has its contract type (`typeof`), e.g. the vector is array<float>, not array<double>."""


class ExpectKeysToBeUniquePerVersion(gxe.UnexpectedRowsExpectation):
    """One row per entity key and model_version in the partition: a duplicate makes point-in-time joins fan out."""


class ExpectSingleModelVersion(gxe.UnexpectedRowsExpectation):
    """The partition holds only the validated model_version (no leftovers of another version, no mixed write)."""


class ExpectPartitionDayToMatch(gxe.UnexpectedRowsExpectation):
    """Every row has ds = D and event_timestamp = end of D in the schema's time zone (freshness)."""


class ExpectVectorDimensionToEqual(gxe.UnexpectedRowsExpectation):
    """Every vector has exactly the model's width for this table."""


class ExpectVectorValuesToBeFinite(gxe.UnexpectedRowsExpectation):
    """No vector holds NaN, +-inf or null elements."""


class ExpectVectorNormToBeBetween(gxe.UnexpectedRowsExpectation):
    """Every finite, non-zero vector has an L2 norm inside the configured bounds."""


class ExpectZeroVectorShareToBeBelow(gxe.UnexpectedRowsExpectation):
    """All-zero vectors (a silent default for a failed lookup) stay below the configured share."""


class ExpectEventTimesToFallInDay(gxe.UnexpectedRowsExpectation):
    """Almost every event's local time falls on its ds (the raw log has a few late-logged rows)."""


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


CUSTOM_TYPES = frozenset(cls.expectation_type for cls in (
    ExpectColumnTypesToMatch, ExpectKeysToBeUniquePerVersion, ExpectSingleModelVersion, ExpectPartitionDayToMatch,
    ExpectVectorDimensionToEqual, ExpectVectorValuesToBeFinite, ExpectVectorNormToBeBetween,
    ExpectZeroVectorShareToBeBelow, ExpectEventTimesToFallInDay, ExpectCoverageToBeAbove,
    ExpectDriftMeanCosineToBeBetween, ExpectDriftMovedShareToBeBelow, ExpectEffectiveRankToBeAbove,
    ExpectInformationAbundanceToBeAbove))


def failure_name(expectation_type: str, column: str | None) -> str:
    """The name recorded for a failed expectation: our types name themselves; GE built-ins add their column."""
    if expectation_type in CUSTOM_TYPES or not column:
        return expectation_type
    return f"{expectation_type}({column})"

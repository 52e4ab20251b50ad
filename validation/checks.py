"""Row-level checks of a table as statistics of one Spark aggregation, bounded by GE on the one-row result.

GE's Spark engine answers a suite of column expectations with a query per expectation family, plus a job per
map expectation for its example rows: about twenty Spark jobs per table, whatever its size. Here every row-level
check of a table is one aggregate of one pass over its (cached) batch: a count of the rows that break it, or a
share where the check tolerates some. The statistics form a one-row frame (`profile`), and a real GE suite bounds
each of them (`Check.expectation`: GE's built-in range check on that column), so results, Data Docs and thresholds
stay GE's. A check's name is its column in the frame and the failure it reports, e.g. `not_null(ur)`; its
statistic is Spark SQL text (built only from validated values), kept in the expectation's meta for the reader.
"""
from __future__ import annotations

from dataclasses import dataclass

import great_expectations.expectations as gxe
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from validation.batch import q

CHECK = "check"  # the expectation's meta key that holds its check's name (validation.expectations.failure_name)
NOT_APPLICABLE = "CAST(NULL AS DOUBLE)"  # the statistic of a check whose column the batch lacks


@dataclass(frozen=True)
class Check:
    """One statistic of the batch and the range it must fall in (None: unbounded on that side)."""

    name: str  # the frame column, and the failure name
    statistic: str  # a Spark SQL aggregate over the batch; null means the check does not apply
    min_value: float | None
    max_value: float | None
    description: str

    def expectation(self) -> gxe.Expectation:
        """The GE built-in that bounds this statistic in the one-row frame (GE skips a null: not applicable)."""
        return gxe.ExpectColumnValuesToBeBetween(column=self.name, min_value=self.min_value,
                                                 max_value=self.max_value, description=self.description,
                                                 meta={CHECK: self.name, "statistic": self.statistic})

    def unless(self, applies: bool) -> Check:
        """This check, or the same check that does not apply (its column is missing: the schema check fails)."""
        return self if applies else Check(self.name, NOT_APPLICABLE, self.min_value, self.max_value,
                                          self.description)


def _count(condition: str) -> str:
    return f"count_if(coalesce({condition}, false))"


def broken(name: str, condition: str, description: str) -> Check:
    """No row may meet `condition` (a row where it is null does not count: e.g. a null vector has no width)."""
    return Check(name, _count(condition), 0, 0, description)


def _share(condition: str, of: str) -> str:
    """The share of the rows where `of` is not null that meet `condition` (null when there are none)."""
    return f"CASE WHEN count({of}) > 0 THEN {_count(condition)} / count({of}) END"


def share_at_most(name: str, condition: str, of: str, limit: float, description: str) -> Check:
    """At most `limit` of the rows where `of` is not null may meet `condition` (no such rows: not applicable)."""
    return Check(name, _share(condition, of), 0, float(limit), description)


def share_at_least(name: str, condition: str, of: str, limit: float, description: str) -> Check:
    """At least `limit` of the rows where `of` is not null must meet `condition`."""
    return Check(name, _share(condition, of), float(limit), 1, description)


def unique(columns: list[str], description: str) -> Check:
    """Each combination of `columns` at most once (rows with a null among them are left to the not-null checks)."""
    set_ = " AND ".join(f"{q(c)} IS NOT NULL" for c in columns)
    distinct = ", ".join(q(c) for c in columns)
    return Check(f"unique({','.join(columns)})", f"count_if({set_}) - count(DISTINCT {distinct})", 0, 0,
                 description)


def profile(df: DataFrame, checks: list[Check]) -> dict[str, float | None]:
    """Every check's statistic in one aggregation over `df` (one Spark job, one pass over the data)."""
    row = df.agg(*[F.expr(c.statistic).cast("double").alias(c.name) for c in checks]).first()
    return {c.name: row[i] for i, c in enumerate(checks)}

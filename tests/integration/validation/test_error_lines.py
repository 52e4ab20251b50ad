"""The one line a failed Spark job leaves in a verdict or a step's error names its cause, not the py4j call."""
from __future__ import annotations

import pytest


def test_a_failed_spark_job_is_named_by_its_cause(spark, tmp_path):
    from validation.gate import _one_line

    path = tmp_path / "t"
    spark.range(10).write.parquet(str(path))
    df = spark.read.parquet(str(path))
    gone = next(path.glob("part-*.parquet"))
    gone.unlink()
    with pytest.raises(Exception) as caught:
        df.collect()
    line = _one_line(caught.value)
    assert gone.name in line and "An error occurred while calling" not in line, line

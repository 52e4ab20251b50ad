"""The Great Expectations file context of a lakehouse, and running one suite on one Spark DataFrame.

The context config is `validation/great_expectations.yml` (kept in the repo); its stores live under the quality
root (default `<lakehouse>/_quality/`), so results and Data Docs stay next to the data and survive the run. One
context per quality root per process (loading it costs about a second). GE reuses the active SparkSession (the
one from `spark_jobs.session.get_spark`); the datasource is created with `persist=False` because the gate caches
and releases each partition itself. The one-row day-metrics frames (aggregates already computed in Spark) are
validated through a pandas datasource: GE answers them in milliseconds instead of a Spark job per metric.
"""
from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import great_expectations as gx
from great_expectations.core.expectation_suite import ExpectationSuite
from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.data_context import FileDataContext
import pandas as pd
from pyspark.sql import DataFrame

import validation.expectations  # noqa: F401  (registers the custom expectation classes with GE)
from lfm.config import LfmConfig
from validation.errors import QualityError

TEMPLATE = Path(__file__).with_name("great_expectations.yml")
SPARK_SOURCE = "lfm_spark"
PANDAS_SOURCE = "lfm_pandas"
BATCH = "whole_dataframe"
_contexts: dict[Path, FileDataContext] = {}


def quality_root(cfg: LfmConfig) -> Path:
    """Where the GE context and the PNG reports live: `quality.context_dir`, else `<lakehouse>/_quality`."""
    if cfg.quality.context_dir:
        if "://" in cfg.quality.context_dir:
            raise QualityError(f"quality.context_dir {cfg.quality.context_dir!r} must be a local folder")
        return cfg.resolve(cfg.quality.context_dir)
    if "://" in cfg.lakehouse:
        raise QualityError(f"the lakehouse {cfg.lakehouse} is not a local folder and GE file stores are local: "
                           "set quality.context_dir to a local folder for results and Data Docs")
    return cfg.resolve(cfg.lakehouse) / "_quality"


def get_context(cfg: LfmConfig) -> FileDataContext:
    """The file context under the quality root, created from the repo's template on first use."""
    gx_dir = quality_root(cfg) / "gx"
    if gx_dir not in _contexts:
        gx_dir.mkdir(parents=True, exist_ok=True)
        if not (gx_dir / "great_expectations.yml").exists():
            shutil.copyfile(TEMPLATE, gx_dir / "great_expectations.yml")
        ctx = gx.get_context(mode="file", context_root_dir=str(gx_dir))
        existing = ctx.data_sources.all()  # add once: re-adding a datasource would drop its stored assets
        if SPARK_SOURCE not in existing:
            ctx.data_sources.add_spark(SPARK_SOURCE, persist=False)
        if PANDAS_SOURCE not in existing:
            ctx.data_sources.add_pandas(PANDAS_SOURCE)
        _contexts[gx_dir] = ctx
    return _contexts[gx_dir]


@contextmanager
def locked(cfg: LfmConfig) -> Iterator[None]:
    """Serialise gate runs on one quality root: a run rewrites the stored suites with its day's values."""
    root = quality_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def checkpoint(ctx: FileDataContext, suite: ExpectationSuite, source_name: str = SPARK_SOURCE) -> gx.Checkpoint:
    """Store the suite and (once) its dataframe asset, validation definition and checkpoint, all named after it."""
    source = ctx.data_sources.get(source_name)
    name = suite.name
    if name in source.get_asset_names():
        asset = source.get_asset(name)
    else:
        asset = source.add_dataframe_asset(name)
    if any(b.name == BATCH for b in asset.batch_definitions):
        batch = asset.get_batch_definition(BATCH)
    else:
        batch = asset.add_batch_definition_whole_dataframe(BATCH)
    suite = ctx.suites.add_or_update(suite)
    definition = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    return ctx.checkpoints.add_or_update(gx.Checkpoint(name=name, validation_definitions=[definition],
                                                      result_format="SUMMARY"))


def validate(ctx: FileDataContext, suite: ExpectationSuite, df: DataFrame | pd.DataFrame,
             run_id: RunIdentifier) -> tuple[ValidationResultIdentifier, ExpectationSuiteValidationResult]:
    """Run the suite's checkpoint on `df`; GE stores the result. Returns its store key and the result."""
    source = PANDAS_SOURCE if isinstance(df, pd.DataFrame) else SPARK_SOURCE
    result = checkpoint(ctx, suite, source).run(batch_parameters={"dataframe": df}, run_id=run_id)
    ((key, suite_result),) = result.run_results.items()
    return key, suite_result


def build_docs(ctx: FileDataContext, keys: list[ValidationResultIdentifier]) -> None:
    """Render this run's validation pages, their suites' pages and the index, in one Data Docs build.

    One build per gate run instead of a checkpoint action per suite: the index is rendered once, not per table.
    """
    suites = {k.expectation_suite_identifier.name for k in keys}
    ctx.build_data_docs(resource_identifiers=[*keys, *(ExpectationSuiteIdentifier(name=n) for n in sorted(suites))])


def docs_index(cfg: LfmConfig) -> Path:
    return quality_root(cfg) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"

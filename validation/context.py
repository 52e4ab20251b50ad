"""The Great Expectations file context of a lakehouse, and running one suite on a Spark or a pandas DataFrame.

The context config is `validation/great_expectations.yml` (kept in the repo); its stores live under the quality
root (default `<lakehouse>/_quality/`), so results and Data Docs stay next to the data and survive the run. GE's
file stores are local: with the lakehouse on an object store the quality root is a working folder of this machine
and `publish` copies the results, Data Docs and PNG reports to `<lakehouse>/_quality/` after each gate run. One
context per quality root per process (loading it costs about a second), and its suites and validation
definitions are written only when they change. Two datasources: Spark for the `<table>_schema` suites (GE reuses
the active SparkSession from `spark_jobs.session.get_spark` and reads only the schema; `persist=False` because
the gate caches and releases each batch itself), pandas for the `<table>` suites on the one-row frames of
statistics and metrics already computed in Spark (GE answers them in milliseconds, without a Spark job).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
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
import yaml
from pyspark.sql import DataFrame

import validation.expectations  # noqa: F401  (registers the custom expectation classes with GE)
from lakehouse.artifacts import Artifacts
from lfm.config import LfmConfig
from lfm.storage import Location
from validation.errors import QualityError

TEMPLATE = Path(__file__).with_name("great_expectations.yml")
SPARK_SOURCE = "lfm_spark"
PANDAS_SOURCE = "lfm_pandas"
BATCH = "whole_dataframe"
QUALITY_DIR = "_quality"  # under the lakehouse
DOCS_INDEX = "gx/uncommitted/data_docs/local_site/index.html"  # under the quality root (the template's site)
SHARED = ("gx/uncommitted/data_docs", "gx/uncommitted/validations", "reports")  # what `publish` copies
_PUBLISHED = ".published"  # a stamp in the quality root: its mtime is when the last copy began
_contexts: dict[Path, FileDataContext] = {}


def quality_root(cfg: LfmConfig) -> Path:
    """Where this machine writes the GE context and the PNG reports: `quality.context_dir`, else
    `<lakehouse>/_quality` beside a local lakehouse, else (an object-store lakehouse: GE's file stores are local)
    the working folder `$XDG_CACHE_HOME/lfm/quality/<first 12 hex of the SHA-256 of the lakehouse URI>`
    (`~/.cache/...` by default), one per lakehouse, whose results and reports `publish` copies to the store."""
    if cfg.quality.context_dir:
        if not cfg.location(cfg.quality.context_dir).local:
            raise QualityError(f"quality.context_dir {cfg.quality.context_dir!r} must be a local folder")
        return cfg.resolve(cfg.quality.context_dir)
    lake = cfg.location(cfg.lakehouse)
    if lake.local:
        return lake.path() / QUALITY_DIR
    digest = hashlib.sha256(lake.for_delta_rs().rstrip("/").encode()).hexdigest()[:12]  # s3a:// and s3:// alike
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lfm" / "quality" / digest


def shared_home(cfg: LfmConfig) -> Location | None:
    """Where `publish` copies the quality root's results and reports (`<lakehouse>/_quality` on an object store);
    None when the quality root is itself what readers see: a local lakehouse's, or the `quality.context_dir` set."""
    lake = cfg.location(cfg.lakehouse)
    return None if cfg.quality.context_dir or lake.local else lake.child(QUALITY_DIR)


def publish(cfg: LfmConfig) -> None:
    """Copy the results, Data Docs pages and PNG reports written since the last copy to `shared_home` (same paths
    under it as under the quality root), so a machine other than this run's driver sees them; the index pages go
    last, after the pages they link to. Call it after a gate run, outside `locked` (it takes the lock itself)."""
    home = shared_home(cfg)
    if home is None:
        return
    root = quality_root(cfg)
    files = Artifacts.at(home, cfg.storage.object_store_options())
    with locked(cfg):
        stamp, starting = root / _PUBLISHED, root / f"{_PUBLISHED}.new"
        since = stamp.stat().st_mtime_ns if stamp.exists() else 0
        starting.touch()  # the file system's clock, the one the files' mtimes come from
        for path in sorted(_written_since(root, since), key=lambda p: p.name == "index.html"):
            files.put(path.relative_to(root).as_posix(), path.read_bytes())
        starting.replace(stamp)  # a copy that failed part-way is repeated whole by the next one


def _written_since(root: Path, since_ns: int) -> list[Path]:
    return [path for folder in SHARED for path in (root / folder).rglob("*")
            if path.is_file() and path.stat().st_mtime_ns >= since_ns]


def address(cfg: LfmConfig, path: Path) -> Path | str:
    """Where any machine finds `path`, a file under the quality root: the path itself, or the URI of the copy
    `publish` makes on the lakehouse's object store."""
    home = shared_home(cfg)
    return path if home is None else home.child(path.relative_to(quality_root(cfg)).as_posix()).uri


def get_context(cfg: LfmConfig) -> FileDataContext:
    """The file context under the quality root, created from the repo's template on first use."""
    gx_dir = quality_root(cfg) / "gx"
    if gx_dir not in _contexts:
        gx_dir.mkdir(parents=True, exist_ok=True)
        if not (gx_dir / "great_expectations.yml").exists():
            shutil.copyfile(TEMPLATE, gx_dir / "great_expectations.yml")
        ctx = gx.get_context(mode="file", context_root_dir=str(gx_dir))
        _bound_docs_index(ctx)
        existing = ctx.data_sources.all()  # add once: re-adding a datasource would drop its stored assets
        if SPARK_SOURCE not in existing:
            ctx.data_sources.add_spark(SPARK_SOURCE, persist=False)
        if PANDAS_SOURCE not in existing:
            ctx.data_sources.add_pandas(PANDAS_SOURCE)
        _contexts[gx_dir] = ctx
    return _contexts[gx_dir]


def _bound_docs_index(ctx: FileDataContext) -> None:
    """Give a quality root created from an older template the index bound of the current one (a one-time write)."""
    template = yaml.safe_load(TEMPLATE.read_text())["data_docs_sites"]
    for name, site in (ctx.variables.data_docs_sites or {}).items():
        limit = template.get(name, {}).get("site_index_builder", {}).get("validation_results_limit")
        index = site.get("site_index_builder", {})
        if limit and "validation_results_limit" not in index:
            bounded = {**index, "validation_results_limit": limit}
            ctx.update_data_docs_site(name, {**site, "site_index_builder": bounded})


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


RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}
"""Counts and observed values, no example rows (the frames have one row; the verdict reports the statistic)."""
_definitions: dict[tuple[Path, str], tuple[str, gx.ValidationDefinition]] = {}


def _definition(ctx: FileDataContext, suite: ExpectationSuite, source_name: str) -> gx.ValidationDefinition:
    """The stored validation definition of `suite` on a dataframe asset named after it, with `suite` stored.

    Stores are written only when the suite differs from the one this process stored last under that name (a
    day's suite changes once per day; the metrics suites only with the config) or another process has stored
    another one since (GE's freshness check, which reads the stores and is cheaper than writing them).
    """
    slot = (Path(ctx.root_directory), suite.name)
    wanted = json.dumps(suite.to_json_dict()["expectations"], sort_keys=True, default=str)
    cached = _definitions.get(slot)
    if cached is not None and cached[0] == wanted and cached[1].is_fresh().success:
        return cached[1]
    source = ctx.data_sources.get(source_name)
    names = source.get_asset_names()
    asset = source.get_asset(suite.name) if suite.name in names else source.add_dataframe_asset(suite.name)
    if any(b.name == BATCH for b in asset.batch_definitions):
        batch = asset.get_batch_definition(BATCH)
    else:
        batch = asset.add_batch_definition_whole_dataframe(BATCH)
    stored = ctx.suites.add_or_update(suite)
    definition = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=suite.name, data=batch,
                                                                                  suite=stored))
    _definitions[slot] = (wanted, definition)
    return definition


def validate(ctx: FileDataContext, suite: ExpectationSuite, df: DataFrame | pd.DataFrame,
             run_id: RunIdentifier) -> tuple[ValidationResultIdentifier, ExpectationSuiteValidationResult]:
    """Validate `df` with `suite` (a validation definition run, no checkpoint: it would only add its own store
    writes); GE stores the result. Returns its store key and the result."""
    source = PANDAS_SOURCE if isinstance(df, pd.DataFrame) else SPARK_SOURCE
    result = _definition(ctx, suite, source).run(batch_parameters={"dataframe": df}, result_format=RESULT_FORMAT,
                                                 run_id=run_id)
    key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
                                     run_id=run_id, batch_identifier=result.batch_id)
    return key, result


def build_docs(ctx: FileDataContext, keys: list[ValidationResultIdentifier]) -> None:
    """Render this run's validation pages and the index, in one Data Docs build per gate run.

    Each validation page shows every expectation of its suite with the values it was run with, so the separate
    suite pages (a third of the build: GE compiles its page templates anew for every page) are not rendered.
    """
    ctx.build_data_docs(resource_identifiers=list(keys))


def docs_index(cfg: LfmConfig) -> Path | str:
    """The Data Docs site's index page: a local path, or its URI on the object store (see `publish`)."""
    return address(cfg, quality_root(cfg) / DOCS_INDEX)

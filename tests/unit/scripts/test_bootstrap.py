"""`scripts/bootstrap.sh` installs the environment with its bytecode compiled (README, "Two commands")."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["great_expectations", "feast", "torch", "pyspark", "dagster"])
def test_the_heavy_imports_have_their_bytecode_compiled(module: str) -> None:
    """Where Python may not write bytecode (PYTHONDONTWRITEBYTECODE, a read-only install), a module without its
    compiled file is compiled anew by every process that imports it: GE, Feast and torch cost about 12 s more in
    every `lfm` command and Spark Python worker."""
    origin = importlib.util.find_spec(module).origin  # the package's __init__.py, found without importing it
    cached = Path(importlib.util.cache_from_source(origin))
    assert cached.is_file(), (f"{module} was installed without its bytecode ({cached} is missing): "
                              "run bash scripts/bootstrap.sh")


"""Errors of the serving layer; each message names the thing and the fix (the CLI prints it, exit code 2)."""
from __future__ import annotations

from lfm.errors import LfmError


class ServingError(LfmError):
    """A serving request or operation the platform refuses."""


class NothingRegistered(ServingError):
    """The Feast registry holds no model version yet."""


class UnknownModelVersion(ServingError):
    """A model version that is not registered in the Feast project."""


class MixedModelVersions(ServingError):
    """One request that asks for features of two model versions (two embedding spaces)."""


class BadEntityRows(ServingError):
    """Entity rows a training set cannot be built from (missing key or timestamp column, name clash)."""


class SpecConflict(ServingError):
    """A version registered again with other dims or another CR layer than its views declare."""


class OnlineStoreDown(ServingError):
    """The online store did not answer; Delta tables, verdicts and releases are untouched."""


class NoIndex(ServingError):
    """No ANN index (or no item vectors) for the requested model version and day."""

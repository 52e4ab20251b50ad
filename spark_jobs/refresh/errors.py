"""Errors of the refresh: each names the fix; the CLI prints it as one line."""
from __future__ import annotations

from lfm.errors import LfmError
from lfm.names import BadInput


class RefreshError(BadInput):
    """A refresh that cannot run as asked; nothing was written. The message names the fix."""


class NoEvents(RefreshError):
    """Day D has no events in the lakehouse."""


class MissingState(RefreshError):
    """Yesterday's CR state of this export is missing, or was built under another export spec."""


class TableMismatch(RefreshError):
    """The lakehouse tables lack columns (or types) the model's data schema needs."""


class NonFiniteVectors(RefreshError):
    """The model produced NaN or infinite vectors; nothing was written."""


class PublishError(LfmError):
    """Writing a table failed; the tables written earlier in the run were restored."""

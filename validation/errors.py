"""Errors of the quality gate; the CLI prints them as one line."""
from __future__ import annotations

from lfm.errors import LfmError


class QualityError(LfmError):
    """The gate cannot run (bad setup, unknown expected width, unusable context location)."""


class QualityGateFailed(LfmError):
    """A validated partition failed and is quarantined; the message is the gate's short summary."""

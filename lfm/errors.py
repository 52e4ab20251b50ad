"""The one error type the CLI turns into a short message (exit code 2) instead of a traceback."""


class LfmError(Exception):
    """A failure a user can fix; the message names the thing and the fix."""

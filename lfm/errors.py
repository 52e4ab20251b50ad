"""The one error type the CLI turns into a short message (exit code 2) instead of a traceback."""


class LfmError(Exception):
    """A failure a user can fix; the message names the thing and the fix."""


class StorageFault(LfmError):
    """Stored data the platform relies on is missing or unreadable; every reader and writer stops (fails closed)."""


class RecordTableMissing(StorageFault):
    """A record table that was written is gone (its folder was deleted), so its history is unknown."""


class RecordTableCorrupt(StorageFault):
    """A record table's commit log or files cannot be read."""


class DataFilesLost(StorageFault):
    """Data files of a pinned (released) table version are gone or damaged: that version cannot be read again."""


class RollbackFailed(LfmError):
    """A failed multi-table write could not be undone: some tables' latest versions hold the failed run's rows."""


def cause_line(err: BaseException) -> str:
    """The line of an error that names its cause: for a failed Spark job (its message is "An error occurred while
    calling ..." and a JVM stack trace) the innermost exception line, the Python worker's or the JVM's, instead of the
    first line, which names only the call."""
    text = str(err)
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and ("Error:" in line or "Exception:" in line) and not line.startswith(("at ", "Suppressed:")):
            return line[:500]
    return text.splitlines()[0][:500] if text.strip() else type(err).__name__

"""Typed errors, each carrying the exit code the contract gives it.

The CLI maps these to exit codes in one place; nothing else calls sys.exit.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
# restore_command: PostgreSQL treats an exit status > 125 as fatal and aborts
# recovery instead of taking "not found" as the end of the archive.
EXIT_ARCHIVE_UNREADABLE = 255


class WalkeeperError(Exception):
    """Base class: one clear line for the operator, and an exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class OperationFailed(WalkeeperError):
    """The operation failed or found a problem (exit 1)."""


class ConflictError(OperationFailed):
    """A different object is already stored under this name (exit 1)."""


class NotInArchive(OperationFailed):
    """Every store answered that the object is absent (exit 1)."""


class UsageError(WalkeeperError):
    """Bad usage or bad input (exit 2)."""

    exit_code = EXIT_USAGE


class UnknownName(UsageError):
    """A name or id given on the command line names nothing: a backup id, a dump id,
    a store name (exit 2, like any bad input). fetch's WAL_NAME is the exception:
    PostgreSQL takes its "not in the archive" (exit 1) as the end of the archive."""


def from_os_error(exc: OSError, fetch: bool = False) -> WalkeeperError:
    """An OSError nothing above anticipated, as one line naming the path and what to
    check (exit 1; fetch: 255, since any doubt must stop recovery)."""
    path = exc.filename if exc.filename is not None else "a file"
    what = exc.strerror or type(exc).__name__
    hint = {"EACCES": "check the path's owner and mode (this user must be able to use it)",
            "EPERM": "check the path's owner and mode (this user must be able to use it)",
            "ENOENT": "check that the path exists",
            "EISDIR": "give the path of a file, not of a directory",
            "ENOTDIR": "a component of the path is not a directory",
            "ENOSPC": "free some space on that file system",
            "EROFS": "the file system is read-only"}
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    cls = ArchiveUnreadable if fetch else OperationFailed
    return cls(f"{path}: {what}", hint=hint.get(name, "check the path and its permissions"))


class ConfigError(WalkeeperError):
    """Missing or invalid configuration, unreadable key (exit 3)."""

    exit_code = EXIT_CONFIG


class ArchiveUnreadable(WalkeeperError):
    """fetch: a copy exists but is corrupt, or a store could not be read."""

    exit_code = EXIT_ARCHIVE_UNREADABLE


# Store-level errors: raised by stores, translated by the commands above them.

class StoreError(Exception):
    """A store could not complete an operation (network, permissions, disk)."""

    def __init__(self, store: str, message: str):
        super().__init__(f"store {store!r}: {message}")
        self.store = store


class ObjectNotFound(StoreError):
    """The store answered authoritatively that the object does not exist."""


class ObjectExists(StoreError):
    """A no-clobber put found the name already taken."""


class CorruptObject(Exception):
    """A stored object failed its format or checksum check."""


class MisplacedObject(CorruptObject):
    """A stored object that verifies but holds another name's content: a copy under
    the wrong name (an rsync with the wrong arguments, a mixed-up restore of a store).
    asked: the name that was looked up; holds: what the object really is."""

    def __init__(self, asked: str, holds: str, detail: str = ""):
        super().__init__(f"{asked} holds {holds}" + (f" ({detail})" if detail else "")
                         + ": an object copied under the wrong name")
        self.asked = asked
        self.holds = holds
        self.detail = detail


def counts_as_failure(command: str, code: int) -> bool:
    """Whether an exit is a failure of the work, for the failure log (and so for
    walkeeper_failures_total): bad usage or input (exit 2: a typo, an unknown id, an
    unwritable --html path) is not; nor is fetch's "not in the archive" (exit 1),
    which PostgreSQL probes for routinely (history files, the end of the archive)."""
    if code in (EXIT_OK, EXIT_USAGE):
        return False
    return not (command == "fetch" and code == EXIT_FAILED)

"""Exception tree of the package.

LinkageError
├── ConfigError      bad YAML or config value; names the file and key path
├── InputError       bad input data; names the file, row and column
│   └── StoreError   not an identity store, or one this release cannot read
├── OutputError      an output or checkpoint file cannot be written (disk full, quota)
└── NotFittedError   a model used before fit() or load() (also ValueError, AttributeError)

The CLI maps every ``LinkageError`` to exit code 2. A bare ``ValueError`` or ``TypeError``
means a programming error (a wrong argument from Python code), not bad data or config.
"""

from __future__ import annotations

import errno
import os
import shutil


class LinkageError(Exception):
    """Base class of every error the package raises on purpose."""


class ConfigError(LinkageError):
    """A configuration file or value is invalid."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        where = ""
        if path:
            where += f"{path}: "
        if key:
            where += f"key '{key}': "
        super().__init__(where + message)

    @classmethod
    def of_problems(cls, problems: list[str], *, path: str) -> ConfigError:
        """One error for the problems found in the file ``path``: a single problem on one
        line (its text not repeating the file's name), several as an indented list."""
        if len(problems) == 1:
            only = problems[0]
            return cls(only) if only.startswith(f"{path}:") else cls(only, path=path)
        return cls(f"{len(problems)} problems:\n  " + "\n  ".join(problems), path=path)


class InputError(LinkageError):
    """An input file or table cannot be used as given."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ):
        self.path = path
        self.row = row
        self.column = column
        where = []
        if path:
            where.append(str(path))
        if row is not None:
            where.append(f"line {row}")
        if column:
            where.append(f"column '{column}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class StoreError(InputError):
    """An identity store cannot be opened or read: wrong file, folder, or schema version."""


class OutputError(LinkageError):
    """A file cannot be written where it was asked for: the device is full or the user's
    disk quota is spent (``ENOSPC``, ``EDQUOT``). Names the file; the half-written
    temporary file is already removed."""

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


# errno values meaning "no room to write" (POSIX; EDQUOT is absent on some platforms)
NO_SPACE_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the device or quota is full: an ``OSError`` with ``ENOSPC`` /
    ``EDQUOT`` (Python's and pyarrow's writes), or an error whose text carries the C
    library's message for them (DuckDB's spill and copy errors carry no errno)."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def out_of_space_message(folder: str | os.PathLike[str] | None = None) -> str:
    """What to tell a user whose write ran out of space: how much is free in ``folder``
    (when given and it exists) and that ``linkage run --resume`` keeps the finished stages."""
    free = ""
    if folder is not None:
        try:
            free = f" ({shutil.disk_usage(folder).free / 2**20:,.0f} MiB free there now)"
        except OSError:
            pass
    return (
        f"no space left on the device{free}; free some space (or write to a larger disk) "
        "and run again: a `linkage run` with checkpoints continues from its last finished "
        "stage with --resume"
    )


class NotFittedError(LinkageError, ValueError, AttributeError):
    """A model was used before it was fitted or loaded.

    Also a ``ValueError`` and ``AttributeError``, as scikit-learn's is, so code written
    for scikit-learn estimators catches it.
    """

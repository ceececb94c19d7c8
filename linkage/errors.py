"""Exception tree of the package.

LinkageError
├── ConfigError      bad YAML or config value; names the file and key path
├── InputError       bad input data; names the file, row and column
│   └── StoreError   not an identity store, or one this release cannot read
└── NotFittedError   a model used before fit() or load() (also ValueError, AttributeError)

The CLI maps every ``LinkageError`` to exit code 2. A bare ``ValueError`` or ``TypeError``
means a programming error (a wrong argument from Python code), not bad data or config.
"""

from __future__ import annotations


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


class NotFittedError(LinkageError, ValueError, AttributeError):
    """A model was used before it was fitted or loaded.

    Also a ``ValueError`` and ``AttributeError``, as scikit-learn's is, so code written
    for scikit-learn estimators catches it.
    """

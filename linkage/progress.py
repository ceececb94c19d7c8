"""The progress hook: how long-running compositions tell their caller how far they are.

The library never draws a bar or prints: ``pipeline``, the Linker and ingest call a
``Progress`` object that the caller provides (the CLI's draws a terminal bar or writes
timed job-log lines). A plain callable taking the stage name is accepted too (it is called
once per stage, the older contract).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Progress(Protocol):
    """Receives stage starts and, within a stage, how many units are done.

    ``stage(name, total, unit)`` starts a stage: ``total`` units of ``unit`` (``"pairs"``,
    ``"values"``, ``"files"``) or ``None`` when the stage cannot count its work. Each
    ``advance(n)`` adds ``n`` done units to the current stage. ``stage("done")`` ends the
    last stage.
    """

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        """Start stage ``name`` of ``total`` units (``None``: not counted)."""

    def advance(self, n: int = 1) -> None:
        """Add ``n`` done units to the current stage."""


class _Silent:
    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


class _StageCallback:
    """Adapts ``callback(stage_name)`` to ``Progress``: one call per stage, counts dropped."""

    def __init__(self, callback: Callable[[str], None]):
        self.callback = callback

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        self.callback(name)

    def advance(self, n: int = 1) -> None:
        pass


ProgressLike = Progress | Callable[[str], None] | None


def as_progress(progress: ProgressLike) -> Progress:
    """Return a ``Progress``: ``None`` reports nothing, a callable gets each stage's name."""
    if progress is None:
        return _Silent()
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return _StageCallback(progress)
    raise TypeError(f"progress must be a Progress object or a callable, not {type(progress)}")


__all__ = ["Progress", "ProgressLike", "as_progress"]

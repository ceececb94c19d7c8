"""The progress hook: how long-running compositions tell their caller how far they are.

The library never draws a bar or prints: ``pipeline``, the Linker and ingest call a
``Progress`` object that the caller provides (the CLI's draws a terminal bar or writes
timed job-log lines). A plain callable taking the stage name is accepted too (it is called
once per stage, the older contract).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
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


# Linux's per-process memory counters (proc(5)): VmHWM is the peak resident set size so far,
# and writing "5" to clear_refs resets it to the current size (Linux >= 4.0), so the peak of
# each stage is read without a sampling thread. Elsewhere no figures are reported.
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _peak_rss_bytes() -> int | None:
    """This process's peak resident set size in bytes (VmHWM), or None where not readable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # the file gives kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class StageMemory:
    """A ``Progress`` hook that passes every call on to ``inner`` and records the peak
    resident set size (RSS) of this process during each stage.

    At each ``stage(name)`` the peak since the previous stage started is booked to that stage
    and the kernel's peak counter is reset, so ``peaks()`` gives, per stage name, the highest
    RSS in bytes while it ran (Linux ``/proc/self/status`` VmHWM). Worker processes (parallel
    standardizing) are not counted. Where the counter cannot be reset (not Linux, or
    ``clear_refs`` not writable) no figures are kept and ``peaks()`` is empty.
    """

    def __init__(self, inner: ProgressLike = None):
        self.inner = as_progress(inner)
        self.current: str | None = None
        self._peaks: dict[str, int] = {}
        self.enabled = _peak_rss_bytes() is not None and _reset_peak()

    def _book(self) -> None:
        if self.enabled and self.current is not None:
            peak = _peak_rss_bytes()
            if peak is not None:
                self._peaks[self.current] = max(self._peaks.get(self.current, 0), peak)
            _reset_peak()

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        """Book the peak of the stage that ends here, then start stage ``name``."""
        self._book()
        self.current = None if name == "done" else name
        self.inner.stage(name, total=total, unit=unit)

    def advance(self, n: int = 1) -> None:
        """Pass ``n`` done units on to the wrapped hook."""
        self.inner.advance(n)

    def peaks(self) -> dict[str, int]:
        """Peak RSS in bytes per stage name, the running stage's peak so far included."""
        self._book()
        return dict(self._peaks)


def stage_memory(progress: ProgressLike) -> StageMemory:
    """``progress`` as a ``StageMemory`` (itself when it is one already)."""
    return progress if isinstance(progress, StageMemory) else StageMemory(progress)


__all__ = ["Progress", "ProgressLike", "StageMemory", "as_progress", "stage_memory"]

"""The progress hook: how long-running compositions tell their caller how far they are.

The library never draws a bar or prints: ``pipeline``, the Linker and ingest call a
``Progress`` object that the caller provides (the CLI's draws a terminal bar or writes
timed job-log lines). A plain callable taking the stage name is accepted too (it is called
once per stage, the older contract).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


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


# Linux's per-process memory counters (proc(5)). VmHWM, the peak resident set size so far,
# is exact but cannot be reset without also resetting the peak that getrusage and
# `/usr/bin/time -v` report, so a stage that sets a new process peak is booked that exact
# figure, and any other stage the highest RSS a sampling thread saw while it ran.
_STATUS = Path("/proc/self/status")
_STATM = Path("/proc/self/statm")
_SAMPLE_SECONDS = 0.05


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


def _rss_bytes() -> int | None:
    """This process's resident set size in bytes now (statm's second field, in pages)."""
    try:
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: str) -> list[str]:
    """The process ids of ``pid``'s children (``/proc/PID/task/TID/children``, one file per
    thread: a child belongs to the thread that started it); none where not readable."""
    found: list[str] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                found += f.read().split()
    except OSError:  # gone meanwhile, or a kernel without the children files
        pass
    return found


def _descendant_pids() -> Iterator[str]:
    """The process ids of all this process's descendants now (each once)."""
    todo, seen = _children("self"), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        yield pid
        todo += _children(pid)


def _descendants_rss_bytes() -> int:
    """The resident set size of all this process's descendants now, in bytes (each one's
    statm summed): the worker processes and children a run started, and any other child
    the calling program has. Pages a forked child still shares with its parent count in
    both, so this process's RSS plus this is an upper bound of what the two hold."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in _descendant_pids():
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):  # it exited meanwhile
            continue
    return total


@functools.cache
def _children_listed() -> bool:
    """Whether this kernel lists a process's children (``/proc/PID/task/TID/children``,
    ``CONFIG_PROC_CHILDREN``): without it a live worker's CPU would be seen only once the
    worker is reaped, all of it in that stage, so no CPU figures are kept."""
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and every descendant: its
    own and its waited-for children's (``os.times``; a child's figure moves there when it
    is reaped, its own reaped children's included), plus each live descendant's own and
    its reaped children's (``/proc/PID/stat`` fields 14-17, ``proc(5)``). A descendant
    that exits between two readings and is reaped by this process counts once."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in _descendant_pids():
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # after the command's closing parenthesis field 3 (state) comes first
            total += sum(int(v) for v in fields[11:15]) / ticks
        except (OSError, ValueError, IndexError):  # it exited meanwhile
            continue
    return total


# Environment variable naming a file to which ``StageMemory`` appends every sample (seconds
# since it started, this process's RSS in MB, stage, and the RSS of this process and its
# descendants in MB): where in a stage a peak comes, for a run whose peak differs from one
# run to the next.
RSS_TRACE_ENV = "LINKAGE_RSS_TRACE"


# The process tree is summed every this many samples (0.2 s): a walk over every thread's
# children file and each worker's statm costs ~0.5 ms, ~10 times this process's own sample.
_TREE_EVERY = 4


def _sample(ref: weakref.ref, stop: threading.Event) -> None:
    """Raise the tracker's running maxima every ``_SAMPLE_SECONDS`` (this process) and walk
    its descendants every ``_TREE_EVERY`` samples, while it lives."""
    tick = 0
    while not stop.wait(_SAMPLE_SECONDS):
        tracker = ref()
        rss = _rss_bytes()
        if tracker is None or rss is None:
            return
        tick += 1
        if tick % tracker._tree_every == 0:
            generation = tracker._generation
            others = _descendants_rss_bytes()
            if generation == tracker._generation:  # else a stage ended during the walk
                tracker._others = others
        # between walks the descendants count as last seen, added to this process's RSS now
        total = rss + tracker._others
        if rss > tracker._sampled:
            tracker._sampled = rss
        if total > tracker._sampled_total:
            tracker._sampled_total = total
        if tracker._trace is not None:
            tracker._log(rss, total)
        del tracker


class StageMemory:
    """A ``Progress`` hook that passes every call on to ``inner`` and records the peak
    resident set size (RSS) of this process during each stage.

    ``peaks()`` gives, per stage name, the highest RSS in bytes while it ran: the kernel's
    exact peak (``/proc/self/status`` VmHWM) when the stage raised it, else the highest of
    samples taken every 0.05 s by a daemon thread (a spike shorter than that can be missed).
    The peaks of stages run in a child process for this one are added by ``book``
    (``linkage.apart``). ``totals()`` gives, per stage, the highest RSS of this process and
    all its descendants together (the standardizing, comparing and golden-record workers, a
    ``linkage.apart`` child, and any other child the calling program has): this process's
    samples plus its descendants' sum from the last walk over them (every 0.2 s, and at
    each stage's end), so a descendant's spike shorter than that can be missed, while pages
    a forked child shares with its parent count twice. ``cpu()`` gives, per stage, the CPU
    seconds of this process and its descendants together (read at the stage's start and
    end, not sampled) and ``wall()`` the stage's wall seconds between the same readings.
    Off Linux no figures are kept and all four are empty. ``close()`` stops the thread (so
    does losing the object). ``tree_every``: walk the descendants every this many samples
    (0.05 s each; a walk over a JVM's hundred-odd threads costs about 3 ms).
    With the environment variable ``LINKAGE_RSS_TRACE`` set to a file path, every sample is
    appended to that file as a line ``seconds<TAB>MB<TAB>stage<TAB>total MB`` (a file that
    cannot be opened is not traced).
    """

    def __init__(self, inner: ProgressLike = None, *, tree_every: int = _TREE_EVERY):
        self.inner = as_progress(inner)
        self._tree_every = max(1, tree_every)
        self.current: str | None = None
        self._peaks: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._sampled_total = 0
        self._others = 0  # the last walk's sum of the descendants' RSS
        self._generation = 0  # raised at each booking: a walk begun before it is dropped
        self._hwm = _peak_rss_bytes()
        self.enabled = self._hwm is not None and _rss_bytes() is not None
        self._sampled = 0
        self._cpu: dict[str, float] = {}
        self._cpu_kept = self.enabled and _children_listed()
        self._cpu_at = _cpu_seconds() if self._cpu_kept else 0.0
        self._wall: dict[str, float] = {}
        self._wall_at = time.monotonic()
        self._stop = threading.Event()
        self._trace = None
        self._start = time.monotonic()
        if self.enabled and os.environ.get(RSS_TRACE_ENV):
            try:
                self._trace = open(os.environ[RSS_TRACE_ENV], "a", encoding="utf-8")  # noqa: SIM115
            except OSError:
                self._trace = None
        if self.enabled:
            self._sampled = _rss_bytes() or 0
            self._others = _descendants_rss_bytes()
            self._sampled_total = self._sampled + self._others
            thread = threading.Thread(
                target=_sample, args=(weakref.ref(self), self._stop), daemon=True,
                name="linkage-stage-memory",
            )  # fmt: skip
            thread.start()

    def _book(self) -> None:
        if not self.enabled:
            return
        hwm = _peak_rss_bytes() or 0
        now = _rss_bytes() or 0
        self._generation += 1
        others = _descendants_rss_bytes()
        total = now + others
        cpu = _cpu_seconds() if self._cpu_kept else 0.0
        wall = time.monotonic()
        if self.current is not None and self._cpu_kept:
            # never below 0: a descendant orphaned meanwhile (its parent exited first) leaves
            # the tree walk, and what was counted of it would be taken back out
            spent = max(cpu - self._cpu_at, 0.0)
            self._cpu[self.current] = self._cpu.get(self.current, 0.0) + spent
            self._wall[self.current] = self._wall.get(self.current, 0.0) + wall - self._wall_at
        if self.current is not None:
            # a new process peak during this stage is exact; else the samples' highest
            peak = hwm if hwm > (self._hwm or 0) else max(self._sampled, now)
            self._peaks[self.current] = max(self._peaks.get(self.current, 0), peak)
            # the workers are only sampled: this process's exact peak is a floor for the sum
            most = max(self._sampled_total, total, peak)
            self._totals[self.current] = max(self._totals.get(self.current, 0), most)
        self._hwm = hwm
        self._sampled = now
        self._others = others
        self._sampled_total = total
        self._cpu_at = cpu
        self._wall_at = wall

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        """Book the peak of the stage that ends here, hand the heap's free pages back
        (``release_memory``: what the stage freed does not stay resident under the next
        one), then start stage ``name``."""
        self._book()
        release_memory()
        if _STAGE_THRESHOLDS:
            _set_mmap_threshold(_STAGE_THRESHOLDS.get(name, MMAP_THRESHOLD))
        self.current = None if name == "done" else name
        self.inner.stage(name, total=total, unit=unit)

    def advance(self, n: int = 1) -> None:
        """Pass ``n`` done units on to the wrapped hook."""
        self.inner.advance(n)

    def peaks(self) -> dict[str, int]:
        """Peak RSS in bytes per stage name, the running stage's peak so far included."""
        self._book()
        return dict(self._peaks)

    def totals(self) -> dict[str, int]:
        """Peak RSS in bytes per stage name of this process and its descendants together
        (sampled), the running stage's so far included."""
        self._book()
        return dict(self._totals)

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) per stage name of this process and its descendants
        together (``_cpu_seconds`` read at each stage's start and end), the running stage's
        so far included: divided by :meth:`wall`'s, how many cores the stage kept busy.
        Empty off Linux and where the kernel does not list a process's children. A
        descendant orphaned before it ends (its own parent exited first: the run's
        processes wait for theirs) is counted only while it was in the tree."""
        self._book()
        return dict(self._cpu)

    def wall(self) -> dict[str, float]:
        """Wall seconds per stage name from its start to its end as this hook saw them (a
        stage's ``seconds`` in summary.json time its own work only: standardizing's leave
        out the records checkpoint's writing and reading back), the running stage's so far
        included. Empty off Linux."""
        self._book()
        return dict(self._wall)

    def book(self, peaks: dict[str, int]) -> None:
        """Book the peaks (bytes per stage name) of stages another process ran for this
        one (``linkage.apart``): a stage's figure is the higher of the two processes'; its
        total is at least that peak (the child's exact peak between two samples)."""
        for name, peak in peaks.items():
            self._peaks[name] = max(self._peaks.get(name, 0), int(peak))
            self._totals[name] = max(self._totals.get(name, 0), int(peak))

    def _log(self, rss: int, total: int) -> None:
        """Append one sample to the trace file (``LINKAGE_RSS_TRACE``)."""
        trace = self._trace
        if trace is None:
            return
        try:
            trace.write(
                f"{time.monotonic() - self._start:.2f}\t{rss / 2**20:.0f}\t{self.current}"
                f"\t{total / 2**20:.0f}\n"
            )
            trace.flush()
        except (OSError, ValueError):  # closed meanwhile, or the disk is full
            pass

    def close(self) -> None:
        """Stop the sampling thread (and close the trace file)."""
        self._stop.set()
        trace, self._trace = self._trace, None
        if trace is not None:
            trace.close()

    def __del__(self) -> None:
        self._stop.set()


def release_memory() -> None:
    """Hand the heap's free pages back to the operating system (glibc ``malloc_trim(0)``).

    After a large table is dropped, its strings' memory stays mapped in the process (free
    for Python's next allocations, but not for numpy's or DuckDB's, and counted as resident):
    on the standardized records of 300,000 registry rows, dropping 26 of 66 columns and
    trimming took the resident size from 917 MB to 684 MB. Python has no call for this, so
    it goes to the C library through ctypes; elsewhere than glibc it does nothing.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> Any:
    """The C library through ctypes when it is glibc (``malloc_trim`` and ``mallopt``), else
    None (off Linux, musl): loaded once, since every stage's end calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - musl and others lack them
    except (OSError, AttributeError):
        return None
    return libc


# Blocks of at least this many bytes get pages of their own from the system, handed back
# when freed; smaller ones come from the heap, whose free pages go back at each stage's end
# (``StageMemory.stage``). 32 MiB is glibc's own ceiling for its threshold (which starts at
# 128 KiB and rises to the largest block freed); fixed there, the threshold no longer ties
# the trimming of the heap's top to it. A lower threshold (256 KiB before) gave every
# freed column its own mapping, and every new one fresh pages to fault in: at a million
# records 7.7 M page faults and ~25 s of system CPU (docs/benchmarks.md).
MMAP_THRESHOLD = 32 * 1024 * 1024
_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
# From clustering on, blocks of 256 KiB and more get mappings of their own again: those
# stages free little to reuse, and what the heap kept for reuse raised their peaks (3 M
# records: golden records 4.04 -> 4.38 GB with 32 MiB throughout; docs/benchmarks.md).
SMALL_MMAP_THRESHOLD = 256 * 1024
_LATE_STAGES = ("clustering", "building golden records", "writing outputs")
# Stage name -> threshold, filled by ``return_freed_memory`` (the library alone never sets one)
_STAGE_THRESHOLDS: dict[str, int] = {}


def _set_mmap_threshold(size: int) -> bool:
    """``mallopt(M_MMAP_THRESHOLD, size)``; False off glibc or when refused."""
    libc = _glibc()
    return libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, size) == 1


def return_freed_memory() -> dict[str, str]:
    """Make this process give freed memory back to the system: glibc's mmap threshold
    fixed at ``MMAP_THRESHOLD`` (``mallopt(M_MMAP_THRESHOLD)``; the heap's top is then
    trimmed past glibc's fixed 128 KiB, and ``StageMemory`` trims the rest of the heap at
    each stage's end), and pyarrow's default memory pool set to the system allocator
    (``pyarrow.system_memory_pool``) rather than its bundled mimalloc, which keeps freed
    memory for Arrow's own later use.

    A run's stages then do not each add their transients to what the earlier ones left
    resident, and freed blocks are reused within a stage instead of mapped afresh: on
    997,721 records (`linkage run`, identical outputs) against 256 KiB throughout, page
    faults 7.7 M -> 3.2 M, system CPU 31.6 -> 13.1 s, wall 0.76x (median of 2 pairs) for
    a peak 59 MiB higher (1,751 against 1,692); at 2,993,950 records 0.79x, peak +4%.
    Process-wide, so the library never calls it; the CLI's ``linkage run`` does. A
    setting already given through the environment (``MALLOC_MMAP_THRESHOLD_``,
    ``ARROW_DEFAULT_MEMORY_POOL``) is left as it is; off glibc only the pool changes.
    Returns what was set, e.g. ``{"mmap_threshold": "33554432", "arrow_pool": "system"}``.
    """
    done: dict[str, str] = {}
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and _set_mmap_threshold(MMAP_THRESHOLD):
        done["mmap_threshold"] = str(MMAP_THRESHOLD)
        _STAGE_THRESHOLDS.update(dict.fromkeys(_LATE_STAGES, SMALL_MMAP_THRESHOLD))
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        import pyarrow as pa

        _ARROW_OWN_POOL[:] = [pa.default_memory_pool()]
        pa.set_memory_pool(pa.system_memory_pool())
        done["arrow_pool"] = pa.default_memory_pool().backend_name
    return done


# pyarrow's own default pool, kept by ``return_freed_memory`` when it sets the system one
_ARROW_OWN_POOL: list[Any] = []


def keep_freed_memory() -> str | None:
    """Undo ``return_freed_memory``'s pyarrow pool in a process that ends with its stage
    (``linkage.apart``'s child): pyarrow's own pool again (mimalloc in its wheels), which
    keeps Arrow's freed blocks for Arrow's reuse. Handing freed memory back only helps a
    later stage of the same process; with the system allocator, glibc's per-thread heaps
    held what Arrow's threads freed apart from each other: the reading child at twenty
    million records peaked at 8.3 GB against 6.1 GB in pyarrow's pool (docs/benchmarks.md).
    Returns the pool's name, or None when ``return_freed_memory`` set none."""
    if not _ARROW_OWN_POOL:
        return None
    import pyarrow as pa

    pa.set_memory_pool(_ARROW_OWN_POOL[0])
    return pa.default_memory_pool().backend_name


def stage_memory(progress: ProgressLike) -> StageMemory:
    """``progress`` as a ``StageMemory`` (itself when it is one already)."""
    return progress if isinstance(progress, StageMemory) else StageMemory(progress)


def add_stage_figures(
    summary: dict, report: StageMemory, keys: Mapping[str, str] | None = None
) -> None:
    """Put the peak RSS of each stage so far (MB, 2**20 bytes; ``StageMemory``) in the
    summary as ``peak_rss_mb`` (this process; added to figures already there: a run's
    outputs written later under another hook), the stage holding that peak as
    ``peak_rss_stage``, and the peak RSS of this process and its descendants together
    (worker processes; a local Spark master's JVM and its Python workers) as
    ``peak_total_mb`` (``StageMemory.totals``: the machine's memory the run took), and the
    CPU seconds of those processes per stage as ``cpu_seconds`` (``StageMemory.cpu``) and
    over the stage's wall seconds as ``cores_busy`` (null for a stage under a second);
    nothing where the platform gives no figures. ``keys`` maps the hook's stage names to
    summary.json's (``summary["seconds"]``'s) where they differ. A figure read before
    summary.json is written stops there."""
    keys = keys or {}
    peaks = report.peaks()
    if not peaks:
        return
    for key, figures in (("peak_rss_mb", peaks), ("peak_total_mb", report.totals())):
        mb = dict(summary.get(key) or {})
        mb.update({keys.get(k, k): round(v / 2**20) for k, v in figures.items()})
        summary[key] = mb
    for key in ("peak_rss", "peak_total"):
        mb = summary[f"{key}_mb"]
        summary[f"{key}_stage"] = max(mb, key=mb.__getitem__)
    cpu, cores = dict(summary.get("cpu_seconds") or {}), dict(summary.get("cores_busy") or {})
    wall = report.wall()
    for stage, seconds in report.cpu().items():
        cpu[keys.get(stage, stage)] = round(seconds, 1)
        # over a second at least (the kernel counts CPU in ticks of 10 ms); null below,
        # so that both keep the same stages
        long = wall.get(stage, 0.0) >= 1.0
        cores[keys.get(stage, stage)] = round(seconds / wall[stage], 2) if long else None
    summary["cpu_seconds"], summary["cores_busy"] = cpu, cores


__all__ = [
    "Progress",
    "ProgressLike",
    "StageMemory",
    "add_stage_figures",
    "as_progress",
    "keep_freed_memory",
    "release_memory",
    "return_freed_memory",
    "stage_memory",
]

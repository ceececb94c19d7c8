"""Run one stage of a run in a child process, so that what it leaves behind is not kept.

Reading and standardizing a million records makes and frees some ten million Python objects;
the ones still alive at the end (distinct values, the standardizers' caches and tables) are
spread over the interpreter's memory arenas, which are given back to the system only when
wholly empty. A run that standardizes in its own process kept ~0.3 GB per million records
more resident through every later stage than the columns it holds. A child process that
writes the records checkpoint and exits returns all of it; the run then reads back the
columns it needs into a compact heap.

``run_apart`` forks (Linux: the child has every module the parent imported, a fresh
interpreter would import the standardizers again, ~3 s); the child's progress calls and log
records are relayed to the parent's hooks, its exception is raised again in the parent, and
the peak memory of its stages is booked in the parent's ``StageMemory``. Where fork is not
the platform's way (macOS, Windows) ``can_run_apart`` is false and callers run in-process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

from linkage.errors import LinkageError
from linkage.progress import ProgressLike, StageMemory, _glibc, as_progress, keep_freed_memory


class StageProcessError(LinkageError):
    """A stage's child process ended without a result (killed: out of memory, a signal)."""


def can_run_apart() -> bool:
    """Whether ``run_apart`` can run a stage in a forked child here (Linux only)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class _Relay:
    """The child's ``Progress``: sends each call through the pipe to the parent."""

    def __init__(self, conn: Any):
        self.conn = conn

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        # waits for the parent's hook to take it, as in one process: a hook that raises
        # (a stopped run) stops the child before the stage begins
        self.conn.send(("stage", name, total, unit))
        self.conn.recv()

    def advance(self, n: int = 1) -> None:
        self.conn.send(("advance", n))


class _LogRelay(logging.Handler):
    """The child's log handler: sends each record, its message formatted, to the parent
    (whose handlers, a terminal bar's among them, write it)."""

    def __init__(self, conn: Any):
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # as logging.handlers.QueueHandler.prepare: arguments may not pickle
            record.msg = record.getMessage()
            record.args = None
            record.exc_text = (
                "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else None
            )
            record.exc_info = None
            self.conn.send(("log", record))
        except Exception:  # noqa: BLE001 - a log line must not fail the stage
            self.handleError(record)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (the parent killed for
    memory must not leave its child standardizing on); exit now if it is gone already."""
    libc = _glibc()
    if libc is not None:  # elsewhere the closed pipe still ends the child at its next call
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _child(func: Callable[..., Any], args: tuple, conn: Any, parent: int) -> None:
    _die_with(parent)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_LogRelay(conn))
    keep_freed_memory()  # this process ends with func: Arrow reuses its own freed blocks
    memory = StageMemory(_Relay(conn))
    try:
        result = func(*args, progress=memory)
        peaks = memory.peaks()
        memory.close()
        conn.send(("done", result, peaks))
    except BaseException as exc:  # raised again in the parent
        try:
            payload = pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle is told as text
            payload = pickle.dumps(
                StageProcessError("".join(traceback.format_exception(exc)).rstrip())
            )
        conn.send(("error", payload))
    finally:
        conn.close()


def run_apart(func: Callable[..., Any], *args: Any, progress: ProgressLike = None) -> Any:
    """Return ``func(*args, progress=hook)`` computed in a forked child process.

    ``func`` reports through ``hook`` (a ``Progress``) as it would in-process; each call
    reaches ``progress`` here, in order (the child waits at each stage start until
    ``progress.stage`` has returned), and the child's log records reach this process's
    handlers. Its result must pickle (it crosses a pipe): keep it small, and write tables
    to files. When ``progress`` is a ``StageMemory``, the peak resident memory of the
    child during each of its stages is booked there (``StageMemory.book``).

    Raises what ``func`` raised (a ``LinkageError`` keeps its class and message);
    ``StageProcessError`` when the child ended without an answer (killed by the system for
    memory, or by a signal); ``RuntimeError`` where ``can_run_apart()`` is false.
    A ``KeyboardInterrupt`` here stops the child too.
    """
    if not can_run_apart():
        raise RuntimeError("run_apart needs fork (Linux)")
    say = as_progress(progress)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe()
    with warnings.catch_warnings():
        # Python >= 3.12 warns of fork in a process with threads: the child runs func
        # alone and never takes a lock of the parent's threads (progress bar, sampling)
        warnings.filterwarnings(
            "ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning
        )
        child = context.Process(target=_child, args=(func, args, send, os.getpid()), daemon=True)
        child.start()
    send.close()
    try:
        while True:
            try:
                message = receive.recv()
            except EOFError:
                child.join()
                code = child.exitcode
                how = f"was killed by signal {-code}" if code and code < 0 else f"exited ({code})"
                raise StageProcessError(
                    f"the process running {getattr(func, '__name__', 'a stage')} {how} "
                    "without a result; when the system ran out of memory, lower the "
                    "input per run or raise the machine's memory"
                ) from None
            kind = message[0]
            if kind == "advance":
                say.advance(message[1])
            elif kind == "stage":
                say.stage(message[1], total=message[2], unit=message[3])
                receive.send(True)
            elif kind == "log":
                record = message[1]
                logging.getLogger(record.name).handle(record)
            elif kind == "done":
                if isinstance(progress, StageMemory):
                    progress.book(message[2])
                child.join()
                return message[1]
            else:  # "error"
                child.join()
                raise pickle.loads(message[1])
    finally:
        receive.close()
        if child.is_alive():
            child.terminate()
            child.join(5)
            if child.is_alive():
                os.kill(child.pid, 9)
                child.join()

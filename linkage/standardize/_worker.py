"""The worker process of ``_distinct.worker_process``: runs pickled ``(func, arg)`` calls.

Reads calls from stdin until it closes; writes ``(True, result)`` or ``(False, exception)``
to stdout for each, pickled (what the calls print goes to stderr). Started by the parent with
``python -m``; not for users.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import BinaryIO

from linkage.progress import release_memory


def _channel() -> tuple[BinaryIO, BinaryIO]:
    """Buffered binary streams over the pipes of stdin and stdout, and fd 1 pointed at stderr.

    ``sys.stdout.buffer`` is the raw file under ``python -u`` or ``PYTHONUNBUFFERED`` (set in
    many container images): its ``write`` is one system call, which a pipe ends early when
    the process is stopped and continued (Ctrl-Z then ``fg``, a scheduler suspending the
    job), and ``pickle.dump`` ignores the count, so the rest of a reply was lost and the
    parent waited for it forever. A buffered writer writes until done. The protocol moves
    to a copy of fd 1 so that anything an imported library prints goes to stderr (to
    ``os.devnull`` when the process has none) instead of into a pickle stream.
    """
    out = os.dup(sys.stdout.fileno())
    try:
        errors = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # started without a stderr (2>&-, a daemon)
        errors = os.open(os.devnull, os.O_WRONLY)
    os.dup2(errors, sys.stdout.fileno())
    stdin = open(sys.stdin.fileno(), "rb", closefd=False)  # noqa: SIM115 - for the process's life
    stdout = open(out, "wb")  # noqa: SIM115 - for the process's life
    return stdin, stdout


def main() -> None:
    """Serve calls from stdin until end of input."""
    stdin, stdout = _channel()
    while True:
        try:
            func, arg = pickle.load(stdin)
        except EOFError:
            return
        try:
            reply = (True, func(arg))
        except Exception as exc:  # handed back to the parent, which raises it
            reply = (False, exc)
        del func, arg
        try:
            pickle.dump(reply, stdout, protocol=pickle.HIGHEST_PROTOCOL)
            stdout.flush()
            del reply
            # the call's arguments and result are freed: their heap pages go back to the
            # system instead of staying resident beside the run's own process
            release_memory()
        except BrokenPipeError:
            # the parent is gone (a run interrupted or killed): nothing to answer, and no
            # traceback on the terminal the user interrupted (Python's documented way: the
            # exit's own flush then goes to devnull)
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
            return


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # Ctrl-C reaches the whole process group: the parent reports the interruption
        # once (`interrupted`); a traceback from here would only be noise above it
        os._exit(130)

"""The worker process of ``_distinct.worker_process``: runs pickled ``(func, arg)`` calls.

Reads calls from stdin until it closes; writes ``(True, result)`` or ``(False, exception)``
to stdout for each, pickled. Started by the parent with ``python -m``; not for users.
"""

from __future__ import annotations

import os
import pickle
import sys

from linkage.progress import release_memory


def main() -> None:
    """Serve calls from stdin until end of input."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
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
    main()

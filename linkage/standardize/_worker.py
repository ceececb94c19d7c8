"""The worker process of ``_distinct.worker_process``: runs pickled ``(func, arg)`` calls.

Reads calls from stdin until it closes; writes ``(True, result)`` or ``(False, exception)``
to stdout for each, pickled. Started by the parent with ``python -m``; not for users.
"""

from __future__ import annotations

import pickle
import sys


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
        pickle.dump(reply, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


if __name__ == "__main__":
    main()

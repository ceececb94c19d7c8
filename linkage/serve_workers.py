"""The lookup service's worker processes: uvicorn's supervisor, a listening socket each.

Kept apart from ``linkage.serve`` and light to import: a spawned worker unpickles its process
object (this module's class) before it answers the supervisor's first health check, and
``linkage.serve`` takes seconds to import (pandas, FastAPI). uvicorn comes from the ``serve``
extra.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from uvicorn.supervisors import Multiprocess, multiprocess

from linkage.errors import InputError

# Linux balances connections over the listening sockets of one port that set SO_REUSEPORT
# (since 3.9); elsewhere the option may exist with other semantics (BSD: the last socket
# bound takes them all), so the workers share uvicorn's one socket there.
REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")

_UvicornWorker = multiprocess.Process


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT (and SO_REUSEADDR, as uvicorn
    binds), not listening yet: a worker listens on it once its app is loaded, so the kernel
    sends no connection to a worker still reading the store. Raises OSError from bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class OwnSocketWorker(_UvicornWorker):
    """A uvicorn worker process given its own SO_REUSEPORT socket (see :func:`run_workers`)."""

    def __init__(self, config: Any, sockets: list[socket.socket]):
        self._listener = reuse_port_socket(config.host, config.port)
        super().__init__(config, [self._listener])

    def start(self) -> None:
        """Start the worker, then close this process's copy of its socket: kept, it would
        hold the socket in the port's group after the worker died, and the connections the
        kernel sent to it would wait unanswered."""
        try:
            super().start()
        finally:
            self._listener.close()


def run_workers(config: Any) -> None:
    """Run uvicorn's worker supervisor over ``config`` (a ``uvicorn.Config`` with
    ``workers`` > 1: processes restarted if they die, stopped on SIGINT/SIGTERM) with one
    SO_REUSEPORT socket per worker. Linux only (:data:`REUSE_PORT`).

    Why not uvicorn's own ``workers``: its workers share one listening socket and asyncio
    accepts every pending connection at once, so the worker that wakes first takes a whole
    burst of keep-alive connections (one of two workers served 99% of a benchmark's 8
    connections, measured with ``benchmarks/bench_serve.py``); uvicorn has no SO_REUSEPORT
    option. With a socket each, the kernel spreads new connections over the workers by a
    hash of their addresses. This process keeps the port bound, never listening, so that
    no other program takes it while a worker restarts. Raises InputError when the port
    cannot be bound.
    """
    try:
        holder = reuse_port_socket(config.host, config.port)
    except OSError as exc:
        raise InputError(
            f"cannot listen: {exc.strerror or exc}", path=f"{config.host}:{config.port}"
        ) from None
    # port 0: the port the system chose for the holder, the same for every worker
    config.port = holder.getsockname()[1]
    # the supervisor makes every worker (first, restarted, added) by this module name
    multiprocess.Process = OwnSocketWorker
    try:
        Multiprocess(config, sockets=[]).run()
    except KeyboardInterrupt:  # pragma: no cover - as uvicorn.run
        pass
    finally:
        multiprocess.Process = _UvicornWorker
        holder.close()

"""A listening socket that lb accepts on itself, instead of through the loop's `create_server`.

The listeners whose connections lb drives on the socket directly (tls: `lb.proxy.tls.listener`;
tcp: `lb.proxy.l4.tcp`) need the accepted socket, not a transport. `Acceptor` accepts up to
ACCEPT_BATCH connections per wake-up and hands each to `accepted`; when the process runs out
of file descriptors or memory it stops accepting for ACCEPT_RETRY seconds, logged, rather than
spinning on a listening socket that stays readable.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

log = logging.getLogger("lb.accept")

ACCEPT_BATCH = 64  # connections accepted per wake-up of the listening socket
ACCEPT_RETRY = 1.0  # seconds accepting pauses after running out of file descriptors
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Acceptor(asyncio.AbstractServer):
    """Accepts on `sock` (non-blocking, listening) and calls `accepted` for each connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, listener: str) -> None:
        self.loop = loop
        self.sock = sock
        self.listener = listener
        self._serving = True
        loop.add_reader(sock.fileno(), self._accept)

    def accepted(self, conn: socket.socket, peer: Any) -> None:
        """A new connection (blocking, as accept returns it); the subclass owns it now."""
        raise NotImplementedError

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in OUT_OF_RESOURCES:
                    log.warning("listener %s: accept failed: %s", self.listener, exc)
                    continue
                # Out of file descriptors or memory: back off, or this wake-up repeats at once.
                log.error(
                    "listener %s cannot accept: %s; retrying in %gs",
                    self.listener,
                    exc,
                    ACCEPT_RETRY,
                )
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(ACCEPT_RETRY, self._resume_accepting)
                return
            self.accepted(conn, peer)

    def _resume_accepting(self) -> None:
        if self._serving:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def is_serving(self) -> bool:
        return self._serving

    async def wait_closed(self) -> None:
        return None

    async def start_serving(self) -> None:
        return None  # serving since it was created

    async def serve_forever(self) -> None:
        raise NotImplementedError("the worker runs the loop")

"""An edge-triggered epoll for the sockets lb drives itself: the connections of tcp listeners.

Why. Through the loop's transports, a relayed connection cost uvloop six system calls lb never
needed (getsockname and getpeername on both sockets, SO_ERROR after connect, io_uring
submissions) and about 20 µs of Python and Cython, which capped the new-connection rate of
tcp listeners at under half of haproxy's. A socket registered here costs one epoll_ctl for its
whole life: it is registered once for reading and writing, edge-triggered, and closing it
removes it from the epoll; its owner remembers readiness itself (a side that was readable
stays so until a read comes back short or empty), as nginx does.

Theory of operation. The epoll's own descriptor is one reader of the event loop; when it is
readable, `_dispatch` takes a batch of events and calls each socket's handler with the event
mask. Two invariants:
- a handler that raises ends only its own connection (`ReactorOwner.abort`), and the rest of the
  batch is still delivered: with edge triggering an undelivered event never comes again;
- the batch names descriptors as they were when it was taken, so an event for a descriptor
  that a handler of the same batch closed and reused (a new server socket after a failed
  connect takes the lowest free number) is not given to the new socket.
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("lb.reactor")

READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
WRITABLE = select.EPOLLOUT
HUNG_UP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR  # the peer closed, or failed
FAILED = select.EPOLLERR
_MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
BATCH = 256  # events taken per epoll_wait; more wait for the loop's next turn


class ReactorOwner(Protocol):
    def abort(self) -> None: ...


Handler = Callable[[int], None]


class Reactor:
    """One per worker (`Proxy.reactor`): sockets register a handler for their events."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._handlers: dict[int, tuple[Handler, ReactorOwner]] = {}
        self._born: set[int] | None = None  # descriptors registered during this batch
        loop.add_reader(self._epoll.fileno(), self._dispatch)

    def register(self, fd: int, handler: Handler, owner: ReactorOwner) -> None:
        """Deliver `fd`'s events to `handler` until `forget(fd)`; a socket that is ready
        already gets its first event at once."""
        self._epoll.register(fd, _MASK)
        self._handlers[fd] = (handler, owner)
        if self._born is not None:
            self._born.add(fd)

    def forget(self, fd: int) -> None:
        """Before closing the socket (closing it takes it out of the epoll)."""
        self._handlers.pop(fd, None)

    def _dispatch(self) -> None:
        handlers = self._handlers
        born = self._born = set()
        try:
            for fd, events in self._epoll.poll(0, BATCH):
                if born and fd in born:
                    continue  # an event of the descriptor's previous socket
                entry = handlers.get(fd)
                if entry is None:
                    continue  # closed by an earlier handler of this batch
                try:
                    entry[0](events)
                except Exception as exc:
                    self.loop.call_exception_handler(
                        {"message": "socket event handler failed", "exception": exc}
                    )
                    entry[1].abort()
        finally:
            self._born = None

    def close(self) -> None:
        if not self._epoll.closed:
            self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()

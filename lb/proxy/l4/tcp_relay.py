"""The FORWARDING phase of a `mode: tcp` connection: the two sockets, and the bytes between them.

`TcpRelay` is the base of `lb.proxy.l4.tcp.TcpConnection` (the phases before it: PREAMBLE in
`lb.proxy.l4.tcp_preamble`, CONNECTING in `lb.proxy.l4.tcp_connect`). It owns the state every
phase uses (the client's `Side`, the server's once connected, the phase, the deadline, the byte
counts) and relays: each side's bytes are written to the other, unchanged. Invariants:

- flow control: what a socket would not take is kept in its Side's `out`, and the other side is
  not read until `out` is written, so lb holds at most one CHUNK per direction whatever the
  speeds; the rest waits in the kernel's buffers, where TCP's own flow control slows the sender;
- half-close: a side's FIN (a read of 0 bytes) is passed on as shutdown(WR) of the other side
  once its `out` is written, and the connection stays open the other way; when both sides have
  sent FIN, both are closed;
- a side that fails (a reset, a broken pipe) resets the other, so its peer learns the stream was
  cut.

This is the hot path: every relayed byte goes through `_pump` (and `_flush` when a socket was
full), which count in plain ints and call nothing per chunk beyond the socket calls.
"""

from __future__ import annotations

import logging
import socket
import struct
from contextlib import suppress
from typing import TYPE_CHECKING

from lb.proxy.l4.common import Address

if TYPE_CHECKING:
    from lb.proxy.host import Host
    from lb.proxy.l4.reactor import Reactor
    from lb.proxy.listeners import ListenerSettings

log = logging.getLogger("lb.l4")  # one logger name for tcp and udp, as before the split

# Bytes one read takes. Also the most lb holds for a side that cannot take more: the other
# side is not read again until that much is written.
CHUNK = 256 * 1024
# Bytes relayed one way per readiness event before other connections get their turn.
READ_BUDGET = 4 * CHUNK
# SO_LINGER on, zero seconds: close() then sends RST instead of FIN.
LINGER_RESET = struct.pack("ii", 1, 0)

# One buffer for every read of the worker (one thread): a read that is written on at once, the
# usual case, allocates nothing.
_buffer = bytearray(CHUNK)
_view = memoryview(_buffer)

# A connection's phases (see lb.proxy.l4.tcp).
PREAMBLE, CONNECTING_, FORWARDING, CLOSED = range(4)


class Side:
    """One of a relayed connection's two sockets, and what lb holds for it."""

    __slots__ = ("eof", "fd", "fin", "hung_up", "out", "readable", "shut", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.out = b""  # bytes for this socket that it would not take yet
        self.readable = False  # an edge said bytes wait here, and they are not all read yet
        # The peer's FIN (or an error) is queued behind the bytes: a short read no longer
        # means drained, as the edge that announced both has come already.
        self.hung_up = False
        self.eof = False  # this socket's peer sent FIN
        self.fin = False  # FIN is to go to this socket once `out` is written
        self.shut = False  # FIN was sent to this socket

    def close(self, reset: bool) -> None:
        if reset:
            with suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        self.sock.close()


class TcpRelay:
    """A tcp connection's two sides and the relaying between them. `TcpConnection.__init__`
    sets every attribute (one place, and no chain of __init__ calls per accepted client)."""

    __slots__ = (
        "back",
        "bytes_in",
        "bytes_out",
        "checked",
        "client",
        "closed",
        "deadline",
        "front",
        "last_active",
        "listener",
        "local",
        "phase",
        "proxy",
        "reactor",
    )

    proxy: Host
    listener: ListenerSettings
    reactor: Reactor
    front: Side  # the client's socket
    back: Side | None  # the server's, from the connect on
    phase: int
    closed: bool
    deadline: float
    client: Address | None  # the real client: the peer, or the PROXY source
    local: Address | None  # where the client connected to, when asked
    bytes_in: int  # client -> server, not yet added to the metrics
    bytes_out: int  # server -> client, likewise
    checked: int  # bytes_in + bytes_out at the last idle check
    last_active: float

    @property
    def client_ip(self) -> str:
        return self.client[0] if self.client else "-"

    def client_address(self) -> Address | None:
        return self.client

    def local_address(self) -> Address | None:
        # Asked of the socket only when needed (send_proxy): a system call fewer otherwise.
        if self.local is None:
            with suppress(OSError):
                local = self.front.sock.getsockname()
                self.local = (local[0], local[1])
        return self.local

    # Relaying -----------------------------------------------------------------------------

    def _pump(self, src: Side, dst: Side) -> None:
        """Move src's bytes to dst until src is drained or dst is full."""
        if dst.out or dst.shut:
            return  # dst is full: src is read again once dst's `out` is written
        read, send = src.sock.recv_into, dst.sock.send
        moved = 0
        while True:
            try:
                n = read(_buffer)
            except BlockingIOError:
                src.readable = False
                break
            except OSError as exc:
                self._count(src, moved)
                self._failed(src, exc)
                return
            if not n:
                src.readable = False
                self._count(src, moved)
                self._eof(src, dst)
                return
            try:
                sent = send(_view[:n])
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._count(src, moved)
                self._failed(dst, exc)
                return
            moved += n
            if sent < n:
                dst.out = _view[sent:n].tobytes()  # written when dst is writable again
                break
            if n < CHUNK and not src.hung_up:
                src.readable = False  # a short read drained it: the next bytes bring an edge
                break
            if moved >= READ_BUDGET:
                self.proxy.loop.call_soon(self._resume, src, dst)
                break
        self._count(src, moved)

    def _count(self, src: Side, n: int) -> None:
        if src is self.front:
            self.bytes_in += n
        else:
            self.bytes_out += n

    def _resume(self, src: Side, dst: Side) -> None:
        if not self.closed and src.readable:
            self._pump(src, dst)

    def _send(self, dst: Side, data: bytes) -> bool:
        """Write `data` to dst, keeping what it would not take; False if dst failed."""
        try:
            sent = dst.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._failed(dst, exc)
            return False
        dst.out = data[sent:] if sent < len(data) else b""
        return True

    def _flush(self, dst: Side, src: Side) -> None:
        """dst is writable again: write what it holds, then read src again."""
        if not self._send(dst, dst.out) or dst.out:
            return
        if dst.fin:
            self._shut(dst)
        if src.readable and not self.closed:
            self._pump(src, dst)

    def _eof(self, src: Side, dst: Side) -> None:
        src.eof = True
        if dst.out:
            dst.fin = True  # after what dst still holds
        elif dst.eof and src.shut:
            self._close_both()  # the last FIN: close() sends it, no shutdown() needed
        else:
            self._shut(dst)

    def _shut(self, side: Side) -> None:
        side.fin = False
        side.shut = True
        with suppress(OSError):  # the peer is gone: its socket's next event says how
            side.sock.shutdown(socket.SHUT_WR)
        back = self.back
        if self.front.shut and back is not None and back.shut:
            self._close_both()  # FIN both ways: done

    def _failed(self, side: Side, exc: OSError) -> None:
        if self.closed:
            return
        cause = "client_reset" if side is self.front else "server_reset"
        log.debug("%s: %s for %s: %s", self.listener.name, cause, self.client_ip, exc)
        self.proxy.count_error(self.listener.name, cause)
        self._close_both(reset=True)

    # Closing ----------------------------------------------------------------------------------

    def _ended(self) -> None:
        """Bookkeeping that runs once, whichever side ends first: `TcpConnection`'s."""
        raise NotImplementedError

    def _close_both(self, reset: bool = False) -> None:
        self._ended()
        for side in (self.front, self.back):
            if side is not None and side.fd != -1:
                self.reactor.forget(side.fd)
                side.fd = -1
                side.close(reset)

    def close(self) -> None:
        """Close both sides (what the kernel holds is still sent)."""
        self._close_both()

    abort = close  # what the worker calls (over max_connections, after the shutdown grace)

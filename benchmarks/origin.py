"""A small, fast HTTP/1.1 origin for benchmarks and tests: `python -m benchmarks.origin --port N`.

Serves fixed bodies at `/small` (13 bytes) and `/64k` (64 KiB), and the small body at `/cached`
(with `Cache-Control: max-age=3600`) and `/nostore` (`Cache-Control: no-store`) for the cache
cases, 404 elsewhere; keeps connections
alive unless the request says `Connection: close` (or is HTTP/1.0 without keep-alive); answers
pipelined requests in order. Request bodies (Content-Length only) are read and discarded. It is
used when nginx is not installed; it is deliberately minimal, not a general server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import cast

SMALL_BODY = b"hello, world\n"
BODY_64K = (b"0123456789abcdef" * 4096)[: 64 * 1024]
# /bulk: a big body for throughput cases (the L4 bulk cases read it over 1 and 8 connections).
BODY_BULK = BODY_64K * 256  # 16 MiB
BODIES: dict[bytes, bytes] = {b"/small": SMALL_BODY, b"/64k": BODY_64K, b"/bulk": BODY_BULK}
# The cache cases' paths: the small body, with what a cache needs to know about it.
CACHE_CONTROL: dict[bytes, bytes] = {b"/cached": b"max-age=3600", b"/nostore": b"no-store"}

_MAX_HEAD = 64 * 1024


def _response(status: bytes, body: bytes, close: bool, cache_control: bytes = b"") -> bytes:
    head = (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    )
    if cache_control:
        head += b"Cache-Control: " + cache_control + b"\r\n"
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


# Responses are built once: the hot path only looks them up (keep-alive and close variants).
_RESPONSES: dict[tuple[bytes, bool], bytes] = {
    (path, close): _response(b"200 OK", body, close)
    for path, body in BODIES.items()
    for close in (False, True)
} | {
    (path, close): _response(b"200 OK", SMALL_BODY, close, cache_control)
    for path, cache_control in CACHE_CONTROL.items()
    for close in (False, True)
}
_NOT_FOUND = {close: _response(b"404 Not Found", b"not found\n", close) for close in (False, True)}
_BAD_REQUEST = _response(b"400 Bad Request", b"bad request\n", True)


class OriginProtocol(asyncio.Protocol):
    __slots__ = ("_buffer", "_skip", "_transport")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._skip = 0  # request-body bytes still to discard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        while True:
            if self._skip:
                n = min(self._skip, len(buffer))
                self._skip -= n
                buffer = buffer[n:]
                if self._skip:
                    break
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    out.append(_BAD_REQUEST)
                    self._finish(out, close=True)
                    return
                break
            head = buffer[:end]
            buffer = buffer[end + 4 :]
            response, close = self._answer(head)
            out.append(response)
            if close:
                self._finish(out, close=True)
                return
        self._buffer = buffer
        if out:
            transport.write(b"".join(out))

    def _answer(self, head: bytes) -> tuple[bytes, bool]:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return _BAD_REQUEST, True
        _method, target, version = parts
        close = version == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"connection":
                tokens = value.strip().lower()
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens:
                    close = False
            elif name == b"content-length":
                try:
                    self._skip = int(value)
                except ValueError:
                    return _BAD_REQUEST, True
        path = target.split(b"?", 1)[0]
        response = _RESPONSES.get((path, close))
        return (response if response is not None else _NOT_FOUND[close]), close

    def _finish(self, out: list[bytes], close: bool) -> None:
        assert self._transport is not None
        self._transport.write(b"".join(out))
        if close:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve(host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Start the origin on the running loop; `port=0` picks a free port (see `server.sockets`)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(OriginProtocol, host, port, backlog=4096, reuse_address=True)


async def _main(host: str, port: int) -> None:
    server = await serve(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"origin listening on {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.origin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(args.host, args.port))
    else:
        uvloop.run(_main(args.host, args.port))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())

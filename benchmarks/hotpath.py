"""The proxy's own cost per request, without sockets: `python -m benchmarks.hotpath [-n N]`.

One `ClientConnection` and one kept-alive `UpstreamConnection` on fake transports are fed a
small GET and nginx's answer to it N times, so what is timed is lb's Python and the parsers,
none of the system calls or event-loop dispatch that `python -m benchmarks` also measures. On a
shared machine the µs figure moves; for a steady one, count instructions instead:

    valgrind --tool=callgrind python -m benchmarks.hotpath -n 4001   # minus the same with -n 1

and divide the difference by 4000 (about 146k instructions per request, 173k with the
access log on).

`--access-log [FORMAT]` runs it with the access log on (as `lb run` ships it), written to a
file in a temp dir, in `json` (the default) or `combined` format; the figure includes writing
the log (a worker flushes it as the real one does).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from lb.config import load_config_text
from lb.loops import install_best_loop
from lb.proxy.http.client import ClientConnection
from lb.proxy.http.connection import UpstreamConnection
from lb.proxy.proxy import Proxy

CONFIG = """
version: 1
listeners: {web: {bind: "127.0.0.1:0"}}
routes: [{name: all, match: {}, pool: origin}]
pools: {origin: {servers: [{address: "127.0.0.1:1"}]}}
"""
NO_LOG = "access_log: {enabled: false}\n"
REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (  # what the benchmark's nginx origin sends for /small
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 15:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\n"
    b"hello, world\n"
)


class FakeTransport:
    """Enough of a transport for the proxy: writes are counted, never sent."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


async def measure(n: int, access_log: Path | None = None, log_format: str = "json") -> float:
    """Seconds per request over `n` requests on one kept-alive pair of connections; with
    `access_log`, the access log on and written there, in `log_format`."""
    if access_log is None:
        config = CONFIG + NO_LOG
    else:
        config = CONFIG + f'access_log: {{path: "{access_log}", format: {log_format}}}\n'
    worker = Proxy(load_config_text(config), reuse_port=False)
    client = ClientConnection(worker, worker.runtime.listeners["web"])
    client_side = FakeTransport()
    client.connection_made(client_side)  # type: ignore[arg-type]
    server = worker.runtime.pools["origin"].servers[0]
    upstream = UpstreamConnection(server, worker.ticker, worker.parser_kind)
    upstream.connection_made(FakeTransport())  # type: ignore[arg-type]
    server.idle.append(upstream)
    start = time.perf_counter()
    for _ in range(n):
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)
    worker.access_log.close(wait=10.0)  # what is still buffered is written, and counted
    elapsed = time.perf_counter() - start
    if client_side.writes != n:
        raise RuntimeError(f"{client_side.writes} responses for {n} requests")
    return elapsed / max(n, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotpath", description=__doc__)
    parser.add_argument("-n", type=int, default=100_000, help="requests [%(default)s]")
    parser.add_argument(
        "--access-log",
        nargs="?",
        const="json",
        choices=("json", "combined", "text"),
        help="with the access log on, to a temp file, in this format [json]",
    )
    args = parser.parse_args(argv)
    loop = install_best_loop()
    with tempfile.TemporaryDirectory(prefix="lb-hotpath-") as tmp:
        log = Path(tmp, "access.log") if args.access_log else None
        seconds = asyncio.run(measure(args.n, log, args.access_log or "json"))
        if log is not None:
            lines = log.read_bytes().count(b"\n")
            if lines != args.n:
                raise SystemExit(f"{lines} access log lines for {args.n} requests")
    what = f"access log on ({args.access_log})" if args.access_log else "access log off"
    print(
        f"{seconds * 1e6:.2f} µs of CPU per request in lb itself ({loop}, {args.n} requests, "
        f"{what})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

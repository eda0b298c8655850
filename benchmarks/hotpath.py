"""The proxy's own cost per request, without sockets: `python -m benchmarks.hotpath [-n N]`.

One `ClientConnection` and one kept-alive `UpstreamConnection` on fake transports are fed a
small GET and nginx's answer to it N times, so what is timed is lb's Python and the parsers,
none of the system calls or event-loop dispatch that `python -m benchmarks` also measures. On a
shared machine the µs figure moves; for a steady one, count instructions instead:

    valgrind --tool=callgrind python -m benchmarks.hotpath -n 4001   # minus the same, -n 2001

and divide the difference by 2000 (valgrind needs the real interpreter, not a pyenv shim; the
difference of two long runs leaves out start-up and one-time work). It measures the tree it
imports: the source, about 168k instructions per request (189k with the access log on); run
from a copy built with `python setup.py build_ext --inplace` (the hot path compiled with
mypyc, as `pip install .` ships it), about 51k (60k).

`--access-log [FORMAT]` runs it with the access log on (as `lb run` ships it), written to a
file in a temp dir, in `json` (the default) or `combined` format; the figure includes writing
the log (a worker flushes it as the real one does).

`--case cache-hit` times a hit of the in-process cache instead: the route has `cache:
{default_ttl: 1h}` (as the benchmark's lb-cache subject), one request for /cached fills the
entry before the clock starts (nginx's answer, `Cache-Control: max-age=3600`), and each of
the N requests is then answered from the cache, with no server involved. Per hit:

    valgrind --tool=callgrind python -m benchmarks.hotpath --case cache-hit -n 4001  # minus -n 2001

divided by 2000. `--case cache-miss`: the same route, each request for /nostore
(`Cache-Control: no-store`), so each is looked up, forwarded, and found not storable. From
the source: about 96k instructions per hit, against 168k for /small without a cache; compiled:
27k per hit (35k with the access log on) and 87k per miss with the log.
(valgrind must start the interpreter itself, not a pyenv shim: use
`$(python -c 'import sys; print(sys.executable)')`; with PYTHONHASHSEED=0 the counts repeat
to the instruction.)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from lb.config import load_config_text
from lb.core.cache_fields import format_http_date
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
# The cache-hit case's route: cached as the benchmark's lb-cache subject is.
CACHED_CONFIG = CONFIG.replace("pool: origin}]", "pool: origin, cache: {default_ttl: 1h}}]")
REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (  # what the benchmark's nginx origin sends for /small
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 15:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\n"
    b"hello, world\n"
)
CACHED_REQUEST = b"GET /cached HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
NOSTORE_REQUEST = b"GET /nostore HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
NOSTORE_RESPONSE = (  # what it sends for /nostore: never stored, so every request a miss
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 15:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n"
    b"Cache-Control: no-store\r\n\r\nhello, world\n"
)


def cached_response() -> bytes:
    """What it sends for /cached, the cache cases' path; dated now, as nginx would, so the
    entry is fresh (its age counts from its Date)."""
    return (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: %s\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n"
        b"Cache-Control: max-age=3600\r\n\r\nhello, world\n" % format_http_date(time.time())
    )


CASES = ("small", "cache-hit", "cache-miss")


class FakeTransport:
    """Enough of a transport for the proxy: writes are counted, never sent."""

    def __init__(self) -> None:
        self.writes = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = data

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


async def measure(
    n: int, access_log: Path | None = None, log_format: str = "json", case: str = "small"
) -> float:
    """Seconds per request over `n` requests on one kept-alive pair of connections; with
    `access_log`, the access log on and written there, in `log_format`. `case` "cache-hit":
    requests the cache answers; "cache-miss": requests it looks up and forwards (see the
    module's doc)."""
    config = CONFIG if case == "small" else CACHED_CONFIG
    if access_log is None:
        config += NO_LOG
    else:
        config += f'access_log: {{path: "{access_log}", format: {log_format}}}\n'
    worker = Proxy(load_config_text(config), reuse_port=False)
    client = ClientConnection(worker, worker.runtime.listeners["web"])
    client_side = FakeTransport()
    client.connection_made(client_side)  # type: ignore[arg-type]
    server = worker.runtime.pools["origin"].servers[0]
    upstream = UpstreamConnection(server, worker.ticker, worker.parser_kind)
    upstream.connection_made(FakeTransport())  # type: ignore[arg-type]
    server.idle.append(upstream)
    request, response = REQUEST, RESPONSE
    if case == "cache-miss":
        request, response = NOSTORE_REQUEST, NOSTORE_RESPONSE
    if case == "cache-hit":
        request = CACHED_REQUEST
        client.data_received(request)  # the miss that stores the entry: not timed
        upstream.data_received(cached_response())
        if len(worker.cache.local) != 1:
            raise RuntimeError(f"/cached was not stored: {worker.cache.local!r}")
        client_side.writes = 0
    start = time.perf_counter()
    if case == "cache-hit":
        for _ in range(n):
            client.data_received(request)
    else:
        for _ in range(n):
            client.data_received(request)
            upstream.data_received(response)
    worker.access_log.close(wait=10.0)  # what is still buffered is written, and counted
    elapsed = time.perf_counter() - start
    if client_side.writes != n:
        raise RuntimeError(f"{client_side.writes} responses for {n} requests")
    expect = {"cache-hit": b"HIT", "cache-miss": b"MISS"}.get(case)
    if expect and n and b"\r\nx-cache: %s\r\n" % expect not in client_side.last:
        raise RuntimeError(f"not a cache {case[6:]}: {client_side.last!r}")
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
    parser.add_argument(
        "--case",
        choices=CASES,
        default="small",
        help="small: proxied to the (fake) server; cache-hit: answered by the in-process "
        "cache; cache-miss: looked up in it, then proxied [%(default)s]",
    )
    args = parser.parse_args(argv)
    loop = install_best_loop()
    with tempfile.TemporaryDirectory(prefix="lb-hotpath-") as tmp:
        log = Path(tmp, "access.log") if args.access_log else None
        seconds = asyncio.run(measure(args.n, log, args.access_log or "json", args.case))
        if log is not None:
            lines = log.read_bytes().count(b"\n")
            if lines != args.n + (args.case == "cache-hit"):  # (and the miss that filled it)
                raise SystemExit(f"{lines} access log lines for {args.n} requests")
    what = f"access log on ({args.access_log})" if args.access_log else "access log off"
    print(
        f"{seconds * 1e6:.2f} µs of CPU per request in lb itself ({loop}, {args.n} requests, "
        f"{what}, {args.case})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cases: what wrk sends. A case names a path, extra headers and the scheme it needs.

To add a case (TLS: `scheme="https"`; an L4 case is an ordinary case run against an L4 subject),
append it to `CASES`; subjects that do not serve its scheme, or do not run its `kind`, are
skipped for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str  # used on the command line (--cases)
    title: str  # used in tables and charts
    path: str
    headers: tuple[str, ...] = ()
    scheme: str = "http"
    description: str = ""
    connections: int | None = None  # wrk -c for this case, instead of --connections
    # Which subjects run it: "proxy" cases run for every subject serving the scheme; "cache"
    # cases only for subjects with "cache" in their `kinds` (the cache subjects, and plain `lb`
    # and `nginx` as the uncached reference).
    kind: str = "proxy"
    # What a cache subject must answer in its cache-status field (lb: X-Cache, nginx:
    # X-Cache-Status), checked after the warm-up and after the run; else the row is an error.
    expect_cache: str | None = None


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case(
            "small",
            "small keep-alive",
            "/small",
            description="GET a 13-byte body over kept-alive connections: per-request overhead.",
        ),
        Case(
            "64k",
            "64 KiB keep-alive",
            "/64k",
            description="GET a 64 KiB body over kept-alive connections: body streaming cost.",
        ),
        Case(
            "close",
            "new connection per request",
            "/small",
            headers=("Connection: close",),
            description="GET /small with Connection: close: accept and connection setup cost.",
        ),
        Case(
            "bulk1",
            "bulk, 1 connection",
            "/bulk",
            connections=1,
            description="GET a 16 MiB body over one kept-alive connection: throughput (Gbit/s).",
        ),
        Case(
            "bulk8",
            "bulk, 8 connections",
            "/bulk",
            connections=8,
            description="GET a 16 MiB body over 8 kept-alive connections: throughput (Gbit/s).",
        ),
        Case(
            "tls-small",
            "TLS keep-alive",
            "/small",
            scheme="https",
            description="GET /small over kept-alive TLS connections: per-request cost with TLS.",
        ),
        Case(
            "tls-handshake",
            "new TLS connection per request",
            "/small",
            headers=("Connection: close",),
            scheme="https",
            description="GET /small, Connection: close, over TLS: full handshakes per second.",
        ),
        Case(
            "cache-hit",
            "cache hit",
            "/cached",
            kind="cache",
            expect_cache="HIT",
            description="GET /cached (max-age=3600), warmed: every request a cache hit.",
        ),
        Case(
            "cache-miss",
            "cache miss",
            "/nostore",
            kind="cache",
            expect_cache="MISS",
            description="GET /nostore (no-store): every request a miss, forwarded.",
        ),
    )
}
# The cache cases (`--cache` adds them, and the cache subjects).
CACHE_CASES = ("cache-hit", "cache-miss")
# What a run without --cases measures (the bulk cases are for L4 runs; see README.md).
DEFAULT_CASES = ("small", "64k", "close", "tls-small", "tls-handshake")

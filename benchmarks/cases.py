"""Cases: what wrk sends. A case names a path, extra headers and the scheme it needs.

To add a case (TLS: `scheme="https"`; an L4 case is an ordinary case run against an L4 subject),
append it to `CASES`; subjects that do not serve its scheme are skipped for it.
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
    )
}

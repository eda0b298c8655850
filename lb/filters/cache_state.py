"""The cache filter's part of one request, kept in `session.vars["cache"]`, and the X-Cache
results it ends in.

A `CacheState` is made in the request phase and read by the response and log phases: the key
the request uses and where its entry lives, what X-Cache will say, the body while it may be
stored, and what this request owes the others of its key (a flight to end, a store lock to
let go: `on_log` settles both, whatever ended the request).
"""

from __future__ import annotations

import time

from lb.core.cache_request import NO_DIRECTIVES, RequestDirectives
from lb.core.http import ResponseHead
from lb.proxy.http.session import Session

__all__ = ["BYPASS", "HIT", "MISS", "REVALIDATED", "STALE", "CacheState", "set_state", "state_of"]

HIT, MISS, STALE, REVALIDATED, BYPASS = b"HIT", b"MISS", b"STALE", b"REVALIDATED", b"BYPASS"


class CacheState:
    """The cache's part of one request."""

    __slots__ = (
        "capture",
        "captured",
        "directives",
        "flight",
        "head",
        "key",
        "request_time",
        "result",
        "stored_key",
        "token",
        "unsafe",
    )

    def __init__(self, key: str | None, result: bytes = MISS) -> None:
        self.key = key  # the primary key (None: the request does not use the cache)
        self.stored_key = key  # where its entry is: the primary key, or a variant's
        self.result = result
        self.directives: RequestDirectives = NO_DIRECTIVES
        self.request_time = time.time()
        self.flight = False  # this request fetches for the others of its key (end_flight)
        self.token: str | None = None  # the store's collapse lock, when this request holds it
        self.capture: list[bytes] | None = None  # the body, while it may be stored
        self.captured = 0
        self.head: ResponseHead | None = None  # the response, for storing or invalidating
        self.unsafe = False  # an unsafe method: invalidate on success


def state_of(session: Session) -> CacheState | None:
    return session.vars.get("cache") if session.vars else None


def set_state(session: Session, state: CacheState) -> None:
    if session.vars is None:
        session.vars = {"cache": state}
    else:
        session.vars["cache"] = state

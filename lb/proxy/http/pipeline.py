"""The request pipeline: filters, their hooks, and the chain compiled for each route.

Theory of operation. A request goes through named phases (Pingora's model, DESIGN.md):

    route -> request filters -> choose upstream -> forward
          -> response-head filters -> response-body filters -> response end -> log

A `Filter` overrides only the hooks it needs; every hook has a no-op default. A `Chain`
(lb.proxy.http.chain) is compiled once per (listener, route) when a config is loaded and keeps,
per phase, only the filters that override that phase's hook, so a phase no filter uses is an
empty tuple and costs one falsy test. The exchange (lb.proxy.http.exchange) drives the phases;
filters see only a `Session` (lb.proxy.http.session), never sockets.

What a hook may do:
- `on_request` lets the request go on (None), answers it itself (an `Answer`: an error, a
  redirect, a cached response, a 202), or returns an awaitable (a Redis lookup). The exchange
  then waits for it, at most `wait_timeout` seconds, and goes on with its result: None or an
  `Answer`; past the timeout `on_wait_timeout` decides. Only a request that meets such a filter
  waits: the common request never becomes a coroutine.
  A filter that needs the whole request body first (offload stores it) sets `reads_body` and
  awaits `session.read_body(limit)` in that awaitable: the exchange holds the body's chunks
  as they arrive, up to `limit`, and goes on reading the client meanwhile.
- `on_response_head` may rewrite the head (`ResponseHead.set_field` / `remove_field`) or add
  fields through the session; `from_server` is False for lb's own answers.
- `on_response_body` sees each body chunk and returns what goes on (the same bytes, or others).
- `on_response_end` runs once the whole response went out (store it, count it).
- `on_log` runs exactly once per request, whatever ended it: metrics and the access log.
"""

from __future__ import annotations

from collections.abc import Awaitable

from lb.core.http import ResponseHead
from lb.proxy.http.answer import Answer
from lb.proxy.http.session import Session

__all__ = ["Answer", "Filter", "RequestResult"]

HOOKS = ("on_request", "on_response_head", "on_response_body", "on_response_end", "on_log")


RequestResult = Answer | Awaitable[Answer | None] | None


class Filter:
    """One concern of the request path, built from config. Override only the hooks you need."""

    name = "filter"
    wait_timeout = 1.0  # seconds an awaitable returned by `on_request` may take
    reads_body = False  # its awaitable may call `session.read_body`

    def on_request(self, session: Session) -> RequestResult:
        return None

    def on_wait_timeout(self, session: Session) -> Answer | None:
        """`on_request`'s awaitable took longer than `wait_timeout`: go on (None) or answer."""
        return None

    def on_response_head(self, session: Session, head: ResponseHead, from_server: bool) -> None:
        return None

    def on_response_body(self, session: Session, data: bytes) -> bytes:
        return data

    def on_response_end(self, session: Session) -> None:
        return None

    def on_log(self, session: Session) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

"""A route's filters, per phase (see lb.proxy.http.pipeline): built when a config is loaded,
read by every request. In a module of its own so it can be compiled: `Filter` cannot be (filters
subclass it in plain Python), and a compiled `Chain` is read by the exchange without a lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lb.core.http import ResponseHead
from lb.proxy.http.pipeline import Filter
from lb.proxy.http.session import Session


def overrides(f: Filter, hook: str) -> bool:
    return getattr(type(f), hook) is not getattr(Filter, hook)


class Chain:
    """A route's filters, per phase: only those that override the phase's hook, in order."""

    __slots__ = (
        "filters",
        "log",
        "reads_body",
        "request",
        "response_body",
        "response_end",
        "response_head",
    )

    def __init__(self, filters: list[Filter]) -> None:
        self.filters = tuple(filters)
        self.reads_body = any(f.reads_body for f in filters)
        self.request: tuple[Filter, ...] = tuple(f for f in filters if overrides(f, "on_request"))
        self.response_head: tuple[Callable[[Session, ResponseHead, bool], None], ...] = tuple(
            f.on_response_head for f in filters if overrides(f, "on_response_head")
        )
        self.response_body: tuple[Callable[[Session, bytes], bytes], ...] = tuple(
            f.on_response_body for f in filters if overrides(f, "on_response_body")
        )
        self.response_end: tuple[Callable[[Session], None], ...] = tuple(
            f.on_response_end for f in filters if overrides(f, "on_response_end")
        )
        self.log: tuple[Callable[[Session], Any], ...] = tuple(
            f.on_log for f in filters if overrides(f, "on_log")
        )

    def __repr__(self) -> str:
        return f"<Chain {' '.join(f.name for f in self.filters) or '(empty)'}>"

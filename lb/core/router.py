"""Routing: which route answers a request (sans-IO).

Routes are compiled once per config into a list per listener, in config order; the first
route whose every condition holds wins (Envoy's model). Each condition is compiled to a small
predicate over the `RequestHead`, cheapest first (method, host, path) so most misses are
decided before headers or cookies are looked at. No regex is compiled per request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lb.config.base import ResolvedTimeouts
from lb.config.cache import RouteCache
from lb.config.routes import HeaderCondition, Match, Route
from lb.config.schema import Config
from lb.core.http import RequestHead
from lb.core.retry import DEFAULT_POLICY, RetryPolicy

Predicate = Callable[[RequestHead], bool]


@dataclass(eq=False)
class CompiledRoute:
    name: str
    pool: str | None  # None when the route splits between pools
    split: tuple[tuple[str, int], ...]
    max_body_size: int | None
    timeouts: ResolvedTimeouts
    conditions: tuple[Predicate, ...] = field(repr=False)
    retry: RetryPolicy = DEFAULT_POLICY  # route `retries` (lb.core.retry)
    cache: RouteCache | None = None  # route `cache` (lb.filters.cache)
    # timeouts.request and .tunnel, read by every request: kept as plain floats here, where
    # compiled code reads them without a lookup in the (pydantic) timeouts.
    request_timeout: float = field(init=False, repr=False)
    tunnel_timeout: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.request_timeout = self.timeouts.request
        self.tunnel_timeout = self.timeouts.tunnel

    def matches(self, head: RequestHead) -> bool:
        # A plain loop, not all(...): no generator per route per request on the hot path.
        for condition in self.conditions:  # noqa: SIM110
            if not condition(head):
                return False
        return True


class Router:
    def __init__(self, routes_by_listener: dict[str, list[CompiledRoute]]) -> None:
        self._routes = routes_by_listener

    def routes(self, listener: str) -> list[CompiledRoute]:
        return self._routes.get(listener, [])

    def match(self, listener: str, head: RequestHead) -> CompiledRoute | None:
        for route in self._routes.get(listener, ()):
            if route.matches(head):
                return route
        return None


def route_name(route: Route, index: int) -> str:
    return route.name or f"routes[{index}]"


def compile_router(config: Config) -> Router:
    http_listeners = [name for name, ls in config.listeners.items() if ls.mode == "http"]
    by_listener: dict[str, list[CompiledRoute]] = {name: [] for name in http_listeners}
    for index, route in enumerate(config.routes):
        listener_names = route.listeners if route.listeners is not None else http_listeners
        for listener_name in listener_names:
            if listener_name not in by_listener:
                continue  # validate.py reports unknown or non-http listeners
            listener = config.listeners[listener_name]
            timeouts = config.defaults.timeouts.merged(listener.timeouts).merged(route.timeouts)
            by_listener[listener_name].append(
                CompiledRoute(
                    name=route_name(route, index),
                    pool=route.pool,
                    split=tuple((arm.pool, arm.weight) for arm in route.split or ()),
                    max_body_size=(
                        route.max_body_size
                        if route.max_body_size is not None
                        else config.defaults.max_body_size
                    ),
                    timeouts=timeouts,
                    conditions=tuple(compile_match(route.match)),
                    retry=RetryPolicy.from_config(route.retries),
                    cache=route.cache,
                )
            )
    return Router(by_listener)


def compile_match(match: Match) -> Iterable[Predicate]:
    if match.methods is not None:
        methods = frozenset(match.methods)
        yield lambda h: h.method in methods
    if match.host is not None:
        yield _host_predicate(match.host.lower())
    if match.path is not None:
        exact = match.path
        yield lambda h: h.path == exact
    if match.path_prefix is not None:
        prefix = match.path_prefix
        yield lambda h: h.path.startswith(prefix)
    if match.path_regex is not None:
        search = re.compile(match.path_regex).search
        yield lambda h: search(h.path) is not None
    for name, cond in (match.headers or {}).items():
        yield _header_predicate(name.lower().encode("latin-1"), cond)
    for name, cond in (match.cookies or {}).items():
        yield _cookie_predicate(name, cond)


def _host_predicate(pattern: str) -> Predicate:
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com": one or more labels before it
        return lambda h: h.host.endswith(suffix) and len(h.host) > len(suffix)
    return lambda h: h.host == pattern


def _value_test(cond: str | HeaderCondition) -> Callable[[str | None], bool]:
    if isinstance(cond, str):
        return lambda v: v == cond
    if cond.regex is not None:
        search = re.compile(cond.regex).search
        return lambda v: v is not None and search(v) is not None
    wanted = cond.present if cond.present is not None else True
    return lambda v: (v is not None) == wanted


def _header_predicate(name: bytes, cond: str | HeaderCondition) -> Predicate:
    test = _value_test(cond)

    def predicate(h: RequestHead) -> bool:
        raw = h.index.get(name)
        return test(None if raw is None else raw.decode("latin-1"))

    return predicate


def _cookie_predicate(name: str, cond: str | HeaderCondition) -> Predicate:
    test = _value_test(cond)
    return lambda h: test(h.cookie(name))

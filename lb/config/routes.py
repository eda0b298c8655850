"""`routes`: an http request's `match` and where it goes (a `pool`, or a weighted `split` with
its `sticky`, `force` and `rollback`), and what a route adds on the way: `retries`,
`rate_limit`, `cache` (`lb.config.cache`) and `offload` (`lb.config.queues`).

Routes are tried in order and the first match wins; the checks across routes and the names
they reference live in `lb.config.route_checks`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from lb.config.base import (
    HEADER_NAME,
    RETRY_ON_CONNECT_FAILURE,
    Duration,
    Model,
    Size,
    Timeouts,
    fraction,
)
from lb.config.cache import RouteCache
from lb.config.queues import Offload
from lb.config.units import parse_rate


class HeaderCondition(Model):
    present: bool | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            _compile(v)
        return v

    @model_validator(mode="after")
    def _one_condition(self) -> HeaderCondition:
        if (self.present is None) == (self.regex is None):
            raise ValueError("give exactly one of present or regex, e.g. {present: true}")
        return self


class Match(Model):
    host: str | None = None
    path: str | None = None
    path_prefix: str | None = None
    path_regex: str | None = None
    methods: list[str] | None = None
    headers: dict[str, str | HeaderCondition] | None = None
    cookies: dict[str, str | HeaderCondition] | None = None

    @field_validator("path_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            _compile(v)
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [m.upper() for m in v]

    def is_catch_all(self) -> bool:
        return all(v is None for v in self.model_dump().values())


class SplitArm(Model):
    pool: str
    weight: Annotated[int, Field(ge=0)] = 1


_COOKIE_NAME = HEADER_NAME  # RFC 6265 cookie-name is an RFC 9110 token, as a header name is


def _cookie_name(v: str) -> str:
    if not _COOKIE_NAME.match(v):
        raise ValueError(f"{v!r} is not a valid cookie name (letters, digits, - _), e.g. lb_srv")
    return v


class StickyCookie(Model):
    """Cookie-insert affinity: on a pool, to a server; on a route with a split, to an arm."""

    cookie: Annotated[str, AfterValidator(_cookie_name)]
    ttl: Annotated[Duration, Field(gt=0)] = 3600.0  # the cookie's Max-Age, and its signed expiry


class Force(Model):
    """Send a request to a split arm chosen by a header or cookie, e.g. a tester's x-canary: 1."""

    header: str | None = None
    cookie: Annotated[str, AfterValidator(_cookie_name)] | None = None
    arms: Annotated[dict[str, str], Field(min_length=1)]  # value -> pool (an arm of the split)

    @field_validator("arms", mode="before")
    @classmethod
    def _values_as_text(cls, v: Any) -> Any:
        # `arms: {1: api-v2}`: YAML reads the key as a number; the header carries text.
        if isinstance(v, dict):
            return {
                str(k) if isinstance(k, int | float) and not isinstance(k, bool) else k: p
                for k, p in v.items()
            }
        return v

    @field_validator("header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid header name, e.g. x-canary")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Force:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("give exactly one of header or cookie, e.g. {header: x-canary}")
        return self


class Rollback(Model):
    """Take a canary arm out when its 5xx rate exceeds the stable arm's by max_error_rate."""

    max_error_rate: Annotated[float, BeforeValidator(fraction)] = 0.05
    min_requests: Annotated[int, Field(ge=1)] = 100
    window: Annotated[Duration, Field(gt=0)] = 60.0


class Retries(Model):
    """A route's `retries`: send a failed request to another server (lb.core.retry).

    `attempts` extra tries after the first. `on`: `connect_failure` (a connect refused, timed
    out or failing TLS, for any request; a connection reset or closed before any response
    byte, for idempotent requests) and 5xx statuses (idempotent requests only: the server's
    answer is discarded). Only while nothing was sent to the client and the request body is
    still held for replay (up to 64 KiB). `budget`: retries per pool stay under this share of
    its recent requests (with a floor of a few per second, so low traffic can still retry).
    """

    attempts: Annotated[int, Field(ge=0, le=10)] = 1
    on: list[Literal["connect_failure"] | int] = [RETRY_ON_CONNECT_FAILURE]
    budget: Annotated[float, BeforeValidator(fraction)] = 0.2

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("on")
    @classmethod
    def _statuses(cls, v: list[str | int]) -> list[str | int]:
        for item in v:
            if isinstance(item, int) and not 500 <= item <= 599:
                raise ValueError(f"{item}: only 5xx statuses are retried, e.g. 502, 503, 504")
        return v


class RateLimit(Model):
    """A route's `rate_limit` (lb.filters.rate_limit): GCRA, `rate` requests per second on
    average with bursts of `burst`, counted per `key`; over it, 429 with Retry-After.

    - `key`: `client_ip` [default], `header:NAME`, `cookie:NAME` (a request without it is
      counted by its client_ip), or `route` (one count for every client together).
    - `scope`: `local` [default] counts in each worker process, each allowing its share
      (rate / workers, burst / workers); `shared` counts in Redis, across workers and lbs.
    - `on_store_error` (shared only): `allow` [default] or `deny` (503) while Redis is down.
    - `headers`: the RateLimit-Policy and RateLimit fields on allowed responses too [false].
    """

    rate: Annotated[float, BeforeValidator(parse_rate)]  # requests per second
    burst: Annotated[int, Field(ge=1)] | None = None  # [the rate per second, at least 1]
    key: str = "client_ip"
    scope: Literal["local", "shared"] = "local"
    on_store_error: Literal["allow", "deny"] | None = None  # [allow]
    headers: bool = False

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        kind, sep, name = v.partition(":")
        if kind in ("client_ip", "route") and not sep:
            return v
        if kind == "header" and HEADER_NAME.match(name):
            return v
        if kind == "cookie" and _COOKIE_NAME.match(name):
            return v
        raise ValueError(f"key {v!r}: use client_ip, header:NAME, cookie:NAME or route")

    @property
    def effective_burst(self) -> int:
        return self.burst if self.burst is not None else max(1, int(self.rate))


class Route(Model):
    name: str | None = None
    listeners: list[str] | None = None
    match: Match = Match()
    pool: str | None = None
    split: list[SplitArm] | None = None
    max_body_size: Size | None = None
    timeouts: Timeouts | None = None
    sticky: StickyCookie | None = None  # with split: a client keeps the arm it was given
    force: Force | None = None
    rollback: Rollback | None = None
    retries: Retries | None = None  # [attempts 1, on connect_failure, budget 20%]
    rate_limit: RateLimit | None = None
    cache: RouteCache | None = None  # the response cache (top-level `cache` sets its store)
    offload: Offload | None = None


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"invalid regex {pattern!r}: {e}") from None

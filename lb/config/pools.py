"""`pools.NAME`: the servers a listener or route sends to, how they are balanced, and how
they are watched: active `health_check`, `passive` outlier detection, `slow_start`, the
waiting-room `queue` for servers at their `max_connections`, `sticky`, and `tls` to servers.

The checks between a pool and what uses it live in `lb.config.pool_checks`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from lb.config.base import Duration, Model, Timeouts, split_address
from lb.config.routes import StickyCookie
from lb.config.tls import PoolTls


class HealthCheck(Model):
    """Active health checks (a pool's `health_check`, or `defaults.health_check`).

    A pool is actively checked when it has a `health_check` (even `{}`) or when
    `defaults.health_check` sets `type` or `path`; each key the pool leaves out comes from
    `defaults.health_check`, then from the built-in default below (see
    `lb.core.health.active_check`).

    - `type`: `http` when a `path` is given; otherwise `tcp` for a pool that only tcp/udp
      listeners use, `http` for a pool that routes use.
    - `path` ["/"], `host` [the server's address], `expect_status` [any 2xx or 3xx]: http only;
      a GET of `path` with `Host: host` on a fresh connection, passing when the status line
      arrives within `timeout` with an expected status. tcp passes when a connect succeeds.
    - `interval` [2s] between the starts of two checks; `timeout` [1s] for one check.
    - `healthy_threshold` [2] passes in a row bring a DOWN server UP; `unhealthy_threshold` [3]
      failures in a row take an UP server DOWN (HAProxy's rise/fall). A server starts UP but
      unconfirmed: until one check has passed, a single failure takes it DOWN.
    """

    type: Literal["http", "tcp"] | None = None
    path: str | None = None
    expect_status: list[int] | None = None
    host: str | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    healthy_threshold: Annotated[int, Field(ge=1)] | None = None
    unhealthy_threshold: Annotated[int, Field(ge=1)] | None = None


class PassiveCheck(Model):
    """Passive health checks (outlier detection), a pool's `passive`; off when absent.

    `consecutive_failures` answers in a row that are a connect failure, a timeout or reset
    before the response head, or a 5xx eject the server from the pool for `base_ejection` times
    the number of times it has been ejected (capped at 300s, or `base_ejection` if larger; the
    count drops by one for each `base_ejection` the server then stays in). An ejection that
    would put more than `max_ejected_percent` of the pool's servers out at once is not made.
    Each worker process judges from the traffic it sends, so a server is ejected by each worker
    on its own evidence.
    """

    consecutive_failures: Annotated[int, Field(ge=1)] = 5
    base_ejection: Duration = 30.0
    max_ejected_percent: Annotated[int, Field(ge=0, le=100)] = 50

    @field_validator("base_ejection")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be above 0, e.g. 30s")
        return v


class WaitingRoomConfig(Model):
    """A pool's `queue`: requests wait here, first in first out, when every server is at its
    `max_connections`; more than `max` waiting are refused at once (503 queue_full), and one
    waiting longer than `timeout` gets 503 queue_timeout. `max: 0` turns waiting off."""

    max: Annotated[int, Field(ge=0)] = 100
    timeout: Annotated[Duration, Field(gt=0)] = 5.0


class Server(Model):
    address: str
    weight: Annotated[int, Field(ge=0)] = 1
    backup: bool = False
    # Requests in flight on this server at once (per worker process); beyond it they wait in
    # the pool's `queue`.
    max_connections: Annotated[int, Field(ge=1)] | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        split_address(v)
        return v


Balance = Literal["round_robin", "least_conn", "random", "p2c", "ip_hash", "hash"]


class Pool(Model):
    balance: Balance = "round_robin"
    hash_key: str | None = None
    servers: list[Server] = []
    health_check: HealthCheck | None = None
    timeouts: Timeouts | None = None
    passive: PassiveCheck | None = None
    # A server back from DOWN ramps its weight from 10% to 100% over this time.
    slow_start: Annotated[Duration, Field(gt=0)] | None = None
    # When every server is at its max_connections: wait here (the default queue when unset).
    queue: WaitingRoomConfig | None = None
    # Server addresses given as names are resolved when the pool is built; with this set they
    # are resolved again every `resolve_interval` (lb.proxy.pool.discovery).
    resolve_interval: Duration | None = None
    sticky: StickyCookie | None = None  # a client keeps the server it was given
    send_proxy: Literal["v1", "v2"] | None = None  # PROXY header to each server
    tls: PoolTls | None = None  # speak TLS to the servers

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, v: str | None) -> str | None:
        if v is None:
            return v
        kind, _, name = v.partition(":")
        if kind in ("client_ip", "path") and not name:
            return v
        if kind in ("header", "cookie") and name:
            return v
        raise ValueError(f"hash_key {v!r}: use client_ip, path, header:NAME or cookie:NAME")

    @field_validator("resolve_interval")
    @classmethod
    def _resolve_interval(cls, v: float | None) -> float | None:
        if v is not None and v < 0.1:
            raise ValueError("must be at least 100ms, e.g. 30s")
        return v

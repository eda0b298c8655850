"""The shape of an lb config file (YAML version 1), as frozen pydantic models.

Every model forbids unknown keys: a typo in a hand-edited file is an error, never silently
ignored. Durations are parsed to float seconds, sizes to int bytes. Checks that need more than
one field (references between names, duplicate binds, unreachable routes) live in
`lb.config.validate`, which runs after these models have been built.

Keys whose feature is not built yet are declared as `NotBuilt` so that the loader can say so
precisely instead of calling them unknown.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from lb.config.units import parse_duration, parse_size

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
# A key of the contract whose feature is not built yet: accepted by the schema, refused by
# validate.py with a message naming the feature, so the user is never misled.
NotBuilt = Any


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Model):
    """All optional: a listener's or route's `timeouts` override only what they name."""

    connect: Duration | None = None  # TCP connect to a server
    client_header: Duration | None = None  # whole request head from the client, else 408
    request: Duration | None = None  # request sent -> response head, and between reads after
    idle: Duration | None = None  # keep-alive connection with no request in flight


class ResolvedTimeouts(Model):
    """`defaults.timeouts`: every timeout has a value. Durations, like everywhere else."""

    connect: Duration = 2.0
    client_header: Duration = 10.0
    request: Duration = 30.0
    idle: Duration = 60.0

    def merged(self, override: Timeouts | None) -> ResolvedTimeouts:
        if override is None:
            return self
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.model_copy(update=changes) if changes else self


class HealthCheck(Model):
    type: Literal["http", "tcp"] | None = None
    path: str | None = None
    expect_status: list[int] | None = None
    host: str | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    healthy_threshold: Annotated[int, Field(ge=1)] | None = None
    unhealthy_threshold: Annotated[int, Field(ge=1)] | None = None


class AccessLog(Model):
    enabled: bool = True
    path: str = "-"  # "-" is standard output
    format: Literal["json", "text"] = "json"


class Defaults(Model):
    timeouts: ResolvedTimeouts = ResolvedTimeouts()
    health_check: HealthCheck = HealthCheck()
    max_header_size: Size = 64 * 1024
    max_body_size: Size | None = None
    shutdown_grace: Duration = 30.0  # SIGTERM: how long requests in flight may take to finish


class Listener(Model):
    bind: str
    mode: Literal["http", "tcp", "udp"] = "http"
    pool: str | None = None  # tcp/udp: where every connection goes
    max_connections: Annotated[int, Field(ge=1)] | None = None
    max_header_size: Size | None = None
    timeouts: Timeouts | None = None
    accept_proxy: NotBuilt = None
    redirect_https: NotBuilt = None
    hsts: NotBuilt = None
    tls: NotBuilt = None
    routes: NotBuilt = None

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        split_address(v)
        return v


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


class Route(Model):
    name: str | None = None
    listeners: list[str] | None = None
    match: Match = Match()
    pool: str | None = None
    split: list[SplitArm] | None = None
    max_body_size: Size | None = None
    timeouts: Timeouts | None = None
    sticky: NotBuilt = None
    force: NotBuilt = None
    rollback: NotBuilt = None
    retries: NotBuilt = None
    cache: NotBuilt = None
    offload: NotBuilt = None


class Server(Model):
    address: str
    weight: Annotated[int, Field(ge=0)] = 1
    backup: bool = False
    max_connections: NotBuilt = None

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
    passive: NotBuilt = None
    slow_start: NotBuilt = None
    queue: NotBuilt = None
    resolve_interval: NotBuilt = None
    sticky: NotBuilt = None
    send_proxy: NotBuilt = None
    tls: NotBuilt = None

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


class Admin(Model):
    bind: str = "127.0.0.1:9901"
    token: str | None = None

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        split_address(v)
        return v


class Config(Model):
    version: Literal[1]
    defaults: Defaults = Defaults()
    listeners: dict[str, Listener]
    routes: list[Route] = []
    pools: dict[str, Pool] = {}
    admin: Admin | None = None
    access_log: AccessLog = AccessLog()
    redis: NotBuilt = None
    cache: NotBuilt = None
    queues: NotBuilt = None


# Keys above typed NotBuilt, with the feature (and issue) a user should look for.
NOT_BUILT: dict[str, str] = {
    "accept_proxy": "PROXY protocol (issue #3)",
    "redirect_https": "HTTPS redirect (issue #6)",
    "hsts": "HSTS (issue #6)",
    "tls": "TLS (issue #6)",
    "routes": "SNI routing on tcp listeners (issue #3)",
    "sticky": "sticky sessions (issue #5)",
    "force": "forced canary arms (issue #5)",
    "rollback": "canary rollback (issue #5)",
    "retries": "retries (issue #4)",
    "cache": "the response cache",
    "offload": "queue offload",
    "max_connections": "per-server connection limits and queueing (issue #4)",
    "passive": "passive health checks (issue #4)",
    "slow_start": "slow start (issue #4)",
    "queue": "pool queueing (issue #4)",
    "resolve_interval": "DNS re-resolution (issue #4)",
    "send_proxy": "PROXY protocol to servers (issue #3)",
    "redis": "Redis-backed stores",
    "queues": "queue offload",
}


def split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError with a readable reason."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {address!r} must be HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: port must be a number from 0 to 65535")
    return host, int(port)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"invalid regex {pattern!r}: {e}") from None

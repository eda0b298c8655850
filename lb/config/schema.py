"""The shape of an lb config file (YAML version 1), as frozen pydantic models: `Config`, the
file as a whole, with `defaults`, `admin` and `access_log`.

Every model forbids unknown keys: a typo in a hand-edited file is an error, never silently
ignored. Durations are parsed to float seconds, sizes to int bytes. Each section's models live
in its own module: `lb.config.listeners`, `routes`, `pools`, `tls`, `cache`, `queues`, `redis`,
with the pieces they share in `lb.config.base`. Checks that need more than one field
(references between names, duplicate binds, unreachable routes) live in `lb.config.validate`,
which runs after these models have been built.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from lb.config.base import Duration, Model, ResolvedTimeouts, Size, split_address
from lb.config.cache import CacheConfig
from lb.config.listeners import Listener
from lb.config.pools import HealthCheck, Pool
from lb.config.queues import Queue
from lb.config.redis import Redis
from lb.config.routes import Route


class AccessLogConfig(Model):
    enabled: bool = True
    path: str = "-"  # "-" is standard output
    format: Literal["json", "combined", "text"] = "json"  # combined: NCSA, as Apache and nginx


class Defaults(Model):
    timeouts: ResolvedTimeouts = ResolvedTimeouts()
    health_check: HealthCheck = HealthCheck()
    max_header_size: Size = 64 * 1024
    max_body_size: Size | None = None
    shutdown_grace: Duration = 30.0  # SIGTERM: how long requests in flight may take to finish


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
    access_log: AccessLogConfig = AccessLogConfig()
    sticky_secret: Annotated[str, Field(min_length=16)] | None = None  # signs sticky cookies
    redis: Redis | None = None  # absent: in-process stores
    cache: CacheConfig = CacheConfig()
    queues: dict[str, Queue] = {}

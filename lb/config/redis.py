"""The top-level `redis`: where the shared stores live, reached by a `url` or through
Sentinel. A url may hold a password, so it is never quoted back (`Redis.safe_url`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from lb.config.base import Address, Duration, Model

_REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisSentinel(Model):
    """`redis.sentinel`: ask these Sentinels which server is the master named `master`, and
    follow it when it fails over (redis-py's asyncio Sentinel)."""

    master: Annotated[str, Field(min_length=1)]
    addresses: Annotated[list[Address], Field(min_length=1)]  # the Sentinels, HOST:PORT
    password: str | None = None  # the Sentinels' own password, if they have one


class Redis(Model):
    """The top-level `redis`: where the shared stores live (lb.stores). Absent: in-process
    stores, one per worker process (offload queues: one directory per `lb run`). Give exactly
    one of `url` or `sentinel`."""

    url: str | None = None  # redis://[user:password@]host:port/db, rediss://..., unix:///path
    sentinel: RedisSentinel | None = None
    db: Annotated[int, Field(ge=0)] | None = None  # with sentinel (a url names its own) [0]
    username: str | None = None  # with sentinel: the master's ACL user
    password: str | None = None  # with sentinel: the master's password
    # Each call to Redis answers within this, or fails (the caller bypasses the cache, ...).
    timeout: Annotated[Duration, Field(gt=0)] = 0.25
    # While Redis is down calls fail at once; it is tried again this often in the background.
    probe_interval: Annotated[Duration, Field(gt=0)] = 1.0
    key_prefix: str = "lb:"  # every key lb writes starts with this: several lbs, one Redis
    max_connections: Annotated[int, Field(ge=1)] = 64  # per worker process

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # The url is not quoted back: it may hold a password.
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in _REDIS_SCHEMES:
            raise ValueError(
                "use redis://host:6379/0, rediss://host:6379/0 (TLS) or unix:///path/redis.sock"
            )
        if not rest.split("?", 1)[0].rpartition("@")[2].strip("/"):
            raise ValueError("name a host (or, for unix://, a socket path)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Redis:
        if (self.url is None) == (self.sentinel is None):
            raise ValueError(
                "give exactly one of url or sentinel, e.g. {url: 'redis://127.0.0.1:6379/0'}"
            )
        return self

    def safe_url(self) -> str:
        """The url without its password (for logs and the status page)."""
        if self.url is None:
            return ""
        scheme, _, rest = self.url.partition("://")
        auth, at, host = rest.rpartition("@")
        if not at:
            return self.url
        user = auth.split(":", 1)[0]
        return f"{scheme}://{user + ':***@' if user else '***@'}{host}"

"""Offload in the config: `queues.NAME` (attempts, backoff, timeouts, limits of one offload
queue) and a route's `offload`, which names the queue its requests are stored in."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from lb.config.base import HEADER_NAME, RETRY_ON_CONNECT_FAILURE, Duration, Model, Size


class Offload(Model):
    """A route's `offload`: its requests are stored in `queue` and answered 202 with a job URL;
    `lb worker` (or, without redis, the `lb run` workers) sends them to the route's pool.
    `mode: prefer` offloads only requests that ask with `Prefer: respond-async` (RFC 7240)."""

    queue: str
    mode: Literal["always", "prefer"] = "always"


class Backoff(Model):
    """A queue's retry delays: attempt n waits min(max, base * 2**(n-1)), then `jitter`: `full`
    draws the wait uniformly from [0, that] (AWS's "full jitter"), `equal` from [half, that],
    `none` waits exactly that."""

    base: Annotated[Duration, Field(gt=0)] = 0.5
    max: Annotated[Duration, Field(gt=0)] = 30.0
    jitter: Literal["full", "equal", "none"] = "full"


def _owner(v: str) -> str:
    kind, sep, name = v.partition(":")
    if not sep or kind not in ("header", "cookie") or not HEADER_NAME.match(name):
        raise ValueError(f"{v!r}: give header:NAME or cookie:NAME, e.g. header:authorization")
    return v


RETRY_ON_TIMEOUT: Literal["timeout"] = "timeout"


class Queue(Model):
    """`queues.NAME`: an offload queue (lb.core.offload, lb.offload)."""

    max_attempts: Annotated[int, Field(ge=1)] = 5
    backoff: Backoff = Backoff()
    retry_on: list[Literal["connect_failure", "timeout"] | int] = [
        RETRY_ON_CONNECT_FAILURE,
        RETRY_ON_TIMEOUT,
        502,
        503,
        504,
    ]
    job_timeout: Annotated[Duration, Field(gt=0)] = 30.0  # one run, to the response's end
    ack_timeout: Annotated[Duration, Field(gt=0)] = 60.0  # a silent worker's job goes elsewhere
    result_ttl: Annotated[Duration, Field(gt=0)] = 3600.0
    idempotency_ttl: Annotated[Duration, Field(gt=0)] = 86400.0
    max_length: Annotated[int, Field(ge=1)] = 1000  # jobs waiting or running; more: 503
    max_body_size: Size = 1024 * 1024  # of a request to offload; more: 413
    concurrency: Annotated[int, Field(ge=1)] = 4  # jobs run at once per worker process
    owner: Annotated[str, AfterValidator(_owner)] | None = None

    @field_validator("retry_on")
    @classmethod
    def _statuses(cls, v: list[str | int]) -> list[str | int]:
        for item in v:
            if isinstance(item, int) and not 400 <= item <= 599:
                raise ValueError(f"{item}: retry on 4xx or 5xx statuses, e.g. 502, 503, 504")
        return v

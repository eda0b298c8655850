"""The shape of an lb config file (YAML version 1), as frozen pydantic models.

Every model forbids unknown keys: a typo in a hand-edited file is an error, never silently
ignored. Durations are parsed to float seconds, sizes to int bytes. Checks that need more than
one field (references between names, duplicate binds, unreachable routes) live in
`lb.config.validate`, which runs after these models have been built.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lb.config.units import parse_duration, parse_rate, parse_size

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Model):
    """All optional: a listener's or route's `timeouts` override only what they name."""

    connect: Duration | None = None  # TCP connect to a server
    client_header: Duration | None = None  # whole request head from the client, else 408
    request: Duration | None = None  # request sent -> response head, and between reads after
    idle: Duration | None = None  # keep-alive connection with no request in flight
    tunnel: Duration | None = None  # an Upgrade/WebSocket tunnel with no byte either way


class ResolvedTimeouts(Model):
    """`defaults.timeouts`: every timeout has a value. Durations, like everywhere else."""

    connect: Duration = 2.0
    client_header: Duration = 10.0
    request: Duration = 30.0
    idle: Duration = 60.0
    tunnel: Duration = 3600.0  # HAProxy's `timeout tunnel`: a peer that vanished silently

    def merged(self, override: Timeouts | None) -> ResolvedTimeouts:
        if override is None:
            return self
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.model_copy(update=changes) if changes else self


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


class TcpRouteMatch(Model):
    sni: str  # "a.example.com", or "*.example.com" (one or more labels before the suffix)


class TcpRoute(Model):
    """A tcp listener's route: TLS passthrough to `pool` when the ClientHello names `sni`."""

    match: TcpRouteMatch
    pool: str


def _config_relative(path: str, info: ValidationInfo) -> str:
    """A file named in the config is relative to the config file's directory (when loaded from
    a file; `load_config` passes it as `base_dir`), so `lb check` and `lb run` agree from any
    working directory."""
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if not path:
        raise ValueError("must name a file")
    return os.path.join(base, path) if base and not os.path.isabs(path) else path


ConfigFile = Annotated[str, AfterValidator(_config_relative)]


def _tls_version(v: Any) -> Any:
    # `min_version: 1.2` unquoted is a YAML float; accept it as the string it was meant to be.
    return str(v) if isinstance(v, float) else v


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class Certificate(Model):
    """One certificate chain (PEM, leaf first) and its key; `names` are the server names it is
    chosen for by SNI (exact or "*.example.com"); omitted: the DNS names the certificate holds."""

    cert: ConfigFile
    key: ConfigFile
    names: list[str] | None = None

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [n.lower().rstrip(".") for n in v]


class ListenerTlsConfig(Model):
    certificates: Annotated[list[Certificate], Field(min_length=1)]
    min_version: Annotated[Literal["1.2", "1.3"], BeforeValidator(_tls_version)] = "1.2"
    client_ca: ConfigFile | None = None  # verify client certificates (mTLS) against these CAs
    client_cert: Literal["required", "optional"] | None = None  # [required when client_ca is set]
    client_subject_header: str | None = None  # the verified client subject goes to servers here
    handshake_timeout: Duration = 10.0  # a client that has not finished its handshake is dropped
    # Key-exchange groups offered, OpenSSL names [X25519, P-256, P-384: lb.proxy.tls.groups].
    groups: Annotated[list[str], Field(min_length=1)] | None = None

    @field_validator("client_subject_header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not _HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid header name, e.g. x-client-subject")
        return v


class PoolTls(Model):
    """TLS from lb to the pool's servers."""

    verify: bool = True  # check the server's certificate chain and name
    ca: ConfigFile | None = None  # trust these CAs instead of the system's
    sni: str | None = None  # the name sent and verified [the server's address host]


UnderscoresInHeaders = Literal["drop", "pass", "refuse"]


class Listener(Model):
    bind: str
    mode: Literal["http", "tcp", "udp"] = "http"
    pool: str | None = None  # tcp/udp: where every connection goes
    max_connections: Annotated[int, Field(ge=1)] | None = None
    max_header_size: Size | None = None
    timeouts: Timeouts | None = None
    accept_proxy: bool = False  # the connection starts with a PROXY v1/v2 header
    redirect_https: bool = False  # plain http: answer every request 308 to https://same-host/path
    hsts: str | None = None  # Strict-Transport-Security value, e.g. "max-age=31536000"
    tls: ListenerTlsConfig | None = None  # terminate TLS (http listeners)
    routes: list[TcpRoute] | None = None  # tcp: TLS passthrough by SNI, first match wins
    # Header names with "_": dropped before routing and forwarding [drop], kept, or 400.
    underscores_in_headers: UnderscoresInHeaders | None = None

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


_COOKIE_NAME = _HEADER_NAME  # RFC 6265 cookie-name is an RFC 9110 token, as a header name is


def _cookie_name(v: str) -> str:
    if not _COOKIE_NAME.match(v):
        raise ValueError(f"{v!r} is not a valid cookie name (letters, digits, - _), e.g. lb_srv")
    return v


def fraction(v: Any) -> Any:
    """ "5%" -> 0.05; a bare number is a fraction from 0 to 1 (0.05), never a percentage."""
    given = v
    if isinstance(v, str):
        text = v.strip()
        if not text.endswith("%"):
            raise ValueError(f'{v!r}: write a percentage such as "5%" (or a fraction: 0.05)')
        try:
            v = float(text[:-1]) / 100
        except ValueError:
            raise ValueError(f'{v!r} is not a percentage such as "5%"') from None
    elif isinstance(v, int | float) and not isinstance(v, bool) and 1 < v <= 100:
        raise ValueError(f'{v!r}: write "{v:g}%" (a bare number is a fraction: 0.05 is 5%)')
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise ValueError(f'{given!r}: must be a percentage from "0%" to "100%" (or 0 to 1)')
    return float(v)


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
        if v is not None and not _HEADER_NAME.match(v):
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


RETRY_ON_CONNECT_FAILURE: Literal["connect_failure"] = "connect_failure"


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


class WaitingRoomConfig(Model):
    """A pool's `queue`: requests wait here, first in first out, when every server is at its
    `max_connections`; more than `max` waiting are refused at once (503 queue_full), and one
    waiting longer than `timeout` gets 503 queue_timeout. `max: 0` turns waiting off."""

    max: Annotated[int, Field(ge=0)] = 100
    timeout: Annotated[Duration, Field(gt=0)] = 5.0


class CacheKey(Model):
    """What tells apart the requests a route's cache keeps apart, beyond method and URL."""

    query: Literal["keep", "sort", "ignore"] = "keep"  # the query string as sent, sorted, none
    headers: list[str] = []  # request fields whose values are part of the key
    cookies: list[str] = []  # request cookies whose values are part of the key


class RouteCache(Model):
    """A route's `cache`: the response headers (RFC 9111) decide; these fill in."""

    default_ttl: Duration | None = None  # freshness when the response gives none
    heuristic: bool = False  # 10% of the Last-Modified age (at most a day) when none is given
    stale_while_revalidate: Duration = 0.0  # when the response does not say
    stale_if_error: Duration = 0.0  # when the response does not say
    client_no_cache: Literal["honour", "ignore"] = "honour"  # request no-cache / max-age=0
    allow_set_cookie: bool = False  # store responses that set cookies
    key: CacheKey = CacheKey()


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
        if kind == "header" and _HEADER_NAME.match(name):
            return v
        if kind == "cookie" and _COOKIE_NAME.match(name):
            return v
        raise ValueError(f"key {v!r}: use client_ip, header:NAME, cookie:NAME or route")

    @property
    def effective_burst(self) -> int:
        return self.burst if self.burst is not None else max(1, int(self.rate))


class Offload(Model):
    """A route's `offload`: its requests are stored in `queue` and answered 202 with a job URL;
    `lb worker` (or, without redis, the `lb run` workers) sends them to the route's pool.
    `mode: prefer` offloads only requests that ask with `Prefer: respond-async` (RFC 7240)."""

    queue: str
    mode: Literal["always", "prefer"] = "always"


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


class Backoff(Model):
    """A queue's retry delays: attempt n waits min(max, base * 2**(n-1)), then `jitter`: `full`
    draws the wait uniformly from [0, that] (AWS's "full jitter"), `equal` from [half, that],
    `none` waits exactly that."""

    base: Annotated[Duration, Field(gt=0)] = 0.5
    max: Annotated[Duration, Field(gt=0)] = 30.0
    jitter: Literal["full", "equal", "none"] = "full"


def _owner(v: str) -> str:
    kind, sep, name = v.partition(":")
    if not sep or kind not in ("header", "cookie") or not _HEADER_NAME.match(name):
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


class Admin(Model):
    bind: str = "127.0.0.1:9901"
    token: str | None = None

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        split_address(v)
        return v


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _address(v: str) -> str:
    split_address(v)
    return v


Address = Annotated[str, AfterValidator(_address)]


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


class CacheConfig(Model):
    """The top-level `cache`: the store every cached route shares."""

    max_memory: Size = 64 * 1024 * 1024  # the in-process tier (the whole cache without redis)
    local_ttl: Duration = 5.0  # with redis: the most an entry stays in the in-process tier
    max_object_size: Size = 1024 * 1024  # larger responses stream on, not stored
    compress: bool = True  # zlib the bodies stored in redis
    lb_field: str = "LB-Cache-Control"  # lb's own targeted Cache-Control (RFC 9213 style)
    tag_header: str = "Cache-Tag"  # comma-separated tags, for purge by tag
    collapse_timeout: Duration = 2.0  # how long concurrent misses wait for the first one


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

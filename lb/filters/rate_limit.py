"""A route's `rate_limit`: GCRA per key, 429 over it (issue 16).

Theory of operation. Each request takes one unit from its key's bucket (lb.core.gcra: `burst`
units, refilled at `rate` per second); an empty bucket answers 429 with `Retry-After` and the
IETF RateLimit fields, and the request never reaches a pool. The key is the client address, a
header, a cookie (a request without that header or cookie is counted by its client address)
or the route itself (one bucket for all). Buckets are named by route and key, so the chains of
one route on several listeners share them.

Two scopes, two costs:
- `local`: a plain call on the process's in-process counter (`Stores.local_rates.decide`), no
  coroutine and no task. Under `lb run --workers N` (the supervisor tells each worker N in
  LB_WORKERS) each worker allows rate/N with burst/N (at least 1), so the workers together
  never allow more than the limit; a client whose connections all land on one worker gets
  that worker's share.
- `shared`: one Lua script on Redis per request (lb.stores.redis_rates), counted across every
  worker and every lb on that Redis. It is the only path that waits: at most `redis.timeout`,
  after which (or at once, while Redis is known down) `on_store_error` decides: `allow` lets
  the request through, `deny` answers 503 `rate_limit_unavailable`.

The fields follow draft-ietf-httpapi-ratelimit-headers-11 (May 2026), §3 and §4:
    RateLimit-Policy: "default";q=BURST;w=SECONDS   (the bucket, and how long it takes to refill)
    RateLimit: "default";r=REMAINING;t=SECONDS
`t`, the "effective window" within which the client can use no more than `r`, is the time
until one more unit is free (rounded up): on a 429 it equals Retry-After, as §6 asks (a
Retry-After earlier than the end of the window would contradict it).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable

from lb.config.routes import RateLimit
from lb.core.errors import Reason
from lb.core.gcra import RateDecision
from lb.core.http import ResponseHead
from lb.core.router import route_name
from lb.filters.context import BuildContext
from lb.metrics import RATE_LIMITED
from lb.proxy.http.pipeline import Answer, Filter, RequestResult
from lb.proxy.http.session import Session
from lb.stores import RateCounter, StoreError
from lb.stores.memory_rates import MemoryRateCounter

WORKERS_ENV = "LB_WORKERS"  # set by the supervisor for each worker of `lb run --workers N`
POLICY = b"ratelimit-policy"
FIELD = b"ratelimit"
_VAR = "rate_limit"  # session.vars: this request's decision, for on_response_head
_LONG_KEY = 64  # header and cookie values longer than this are hashed into the bucket name

KeyOf = Callable[[Session], str]


def worker_count() -> int:
    """How many workers share a local limit: `lb run --workers N` says so in LB_WORKERS."""
    try:
        return max(1, int(os.environ.get(WORKERS_ENV, "1")))
    except ValueError:
        return 1


def key_function(key: str) -> KeyOf:
    """The bucket name of a request within its route, from the config's `key`."""
    kind, _, name = key.partition(":")
    if kind == "route":
        return lambda session: "*"
    if kind == "header":
        lname = name.lower().encode("latin-1")

        def by_header(session: Session) -> str:
            assert session.head is not None
            value = session.head.index.get(lname)
            if value is None:
                return "ip:" + session.client_ip
            return "h:" + _short(value.decode("latin-1"))

        return by_header
    if kind == "cookie":

        def by_cookie(session: Session) -> str:
            assert session.head is not None
            value = session.head.cookie(name)
            if value is None:
                return "ip:" + session.client_ip
            return "c:" + _short(value)

        return by_cookie
    return lambda session: "ip:" + session.client_ip


def _short(value: str) -> str:
    # A client chooses these values: a long one must not make a long key in every store.
    if len(value) <= _LONG_KEY:
        return value
    return "#" + hashlib.blake2b(value.encode("latin-1"), digest_size=16).hexdigest()


class RateLimitFilter(Filter):
    """What both scopes share: the bucket's name and size, and the answers."""

    name = "rate_limit"

    def __init__(self, route: str, limit: RateLimit, rate: float, burst: int) -> None:
        self.route = route
        self.limit = limit
        self.rate = rate  # per second, this process's share for a local limit
        self.burst = burst
        self.prefix = route + "\0"
        self.key_of = key_function(limit.key)
        self.limited = RATE_LIMITED.labels(route)  # .labels() once, not per request
        window = max(1, math.ceil(burst / rate - 1e-9))
        self.policy = b'"default";q=%d;w=%d' % (burst, window)
        self.describe = f"{_rate_text(limit.rate)} (burst {limit.effective_burst})"

    def decided(self, session: Session, decision: RateDecision) -> Answer | None:
        if decision.allowed:
            if self.limit.headers:
                vars_ = session.vars
                if vars_ is None:
                    session.vars = {_VAR: decision}
                else:
                    vars_[_VAR] = decision
            return None
        self.limited.inc()
        retry = _seconds(decision.retry_after_seconds)
        answer = Answer.refuse(
            Reason.rate_limited,
            f"route {self.route!r} allows {self.describe} per {_key_text(self.limit.key)}; "
            f"retry in {retry}s",
        )
        answer.fields += [
            (b"retry-after", b"%d" % retry),
            (POLICY, self.policy),
            (FIELD, b'"default";r=0;t=%d' % retry),
        ]
        return answer

    def window(self, decision: RateDecision) -> int:
        """The RateLimit field's `t` after an allowed request: until one more unit is free.
        The bucket is full in `reset_seconds`; the `burst - remaining - 1` units missing
        beyond the next one take 1/rate each to come back."""
        missing = self.burst - decision.remaining - 1
        seconds = decision.reset_seconds - missing / self.rate
        return _seconds(seconds) if seconds > 1e-9 else 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.route} {self.describe} by {self.limit.key}>"


class LocalRateLimit(RateLimitFilter):
    """`scope: local`: decided in this process, synchronously."""

    def __init__(
        self, route: str, limit: RateLimit, counter: MemoryRateCounter, workers: int
    ) -> None:
        super().__init__(
            route, limit, limit.rate / workers, max(1, limit.effective_burst // workers)
        )
        self.counter = counter

    def on_request(self, session: Session) -> RequestResult:
        return self.decided(
            session, self.counter.decide(self.prefix + self.key_of(session), self.rate, self.burst)
        )


class SharedRateLimit(RateLimitFilter):
    """`scope: shared`: one atomic script on Redis, waited for at most `redis.timeout`."""

    def __init__(self, route: str, limit: RateLimit, counter: RateCounter, timeout: float) -> None:
        super().__init__(route, limit, limit.rate, limit.effective_burst)
        self.counter = counter
        # The Redis call gives up after `timeout` and marks Redis down, so that the next calls
        # fail at once; the pipeline's own bound is a backstop just past it, so that it does
        # not cancel the call first (which would leave Redis thought up).
        self.wait_timeout = timeout + 0.02
        self.deny = limit.on_store_error == "deny"

    def on_request(self, session: Session) -> RequestResult:
        return self._acquire(session, self.prefix + self.key_of(session))

    async def _acquire(self, session: Session, key: str) -> Answer | None:
        try:
            decision = await self.counter.acquire(key, self.rate, self.burst)
        except StoreError as e:
            return self._store_failed(str(e))
        return self.decided(session, decision)

    def on_wait_timeout(self, session: Session) -> Answer | None:
        return self._store_failed("redis: no answer in time")

    def _store_failed(self, error: str) -> Answer | None:
        if not self.deny:
            return None  # on_store_error: allow
        return Answer.refuse(
            Reason.rate_limit_unavailable,
            f"route {self.route!r} cannot count requests ({error}) and its "
            "rate_limit.on_store_error is deny",
        )


class _Advertise:
    """`headers: true`: the RateLimit fields on every answer the limit let through."""

    policy: bytes
    window: Callable[[RateDecision], int]

    def on_response_head(self, session: Session, head: ResponseHead, from_server: bool) -> None:
        vars_ = session.vars
        decision = vars_.get(_VAR) if vars_ is not None else None
        if decision is None:  # refused (the 429 has its own), or the store failed
            return
        if from_server and (head.has_field(FIELD) or head.has_field(POLICY)):
            return  # the server's own limits: two "default" policies would be ambiguous
        session.add_response_field(POLICY, self.policy)
        session.add_response_field(
            FIELD, b'"default";r=%d;t=%d' % (decision.remaining, self.window(decision))
        )


class AdvertisedLocalRateLimit(_Advertise, LocalRateLimit):
    pass


class AdvertisedSharedRateLimit(_Advertise, SharedRateLimit):
    pass


def _seconds(seconds: float) -> int:
    """Whole seconds for Retry-After and `t` (delay-seconds): rounded up, at least 1, and
    finite (a request that can never pass is not one a limit of cost 1 makes)."""
    if not math.isfinite(seconds):
        return 86400
    return max(1, math.ceil(seconds - 1e-9))


def _rate_text(rate: float) -> str:
    for unit, seconds in (("s", 1), ("m", 60), ("h", 3600)):
        n = rate * seconds
        if abs(n - round(n)) < 1e-9 and n >= 1:
            return f"{round(n)}/{unit}"
    return f"{rate:g}/s"


def _key_text(key: str) -> str:
    kind, _, name = key.partition(":")
    return {"client_ip": "client address", "route": "route"}.get(kind, f"{kind} {name}")


def build(ctx: BuildContext) -> Filter | None:
    if ctx.route is None:
        return None
    limit = _config_of(ctx)
    if limit is None:
        return None
    stores = ctx.services.stores
    if limit.scope == "shared":
        redis = ctx.config.redis
        timeout = redis.timeout if redis is not None else 1.0
        cls = AdvertisedSharedRateLimit if limit.headers else SharedRateLimit
        return cls(ctx.route.name, limit, stores.rates, timeout)
    local = AdvertisedLocalRateLimit if limit.headers else LocalRateLimit
    return local(ctx.route.name, limit, stores.local_rates, worker_count())


def _config_of(ctx: BuildContext) -> RateLimit | None:
    assert ctx.route is not None
    for index, route in enumerate(ctx.config.routes):
        if route_name(route, index) == ctx.route.name:
            return route.rate_limit
    return None

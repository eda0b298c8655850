"""Checks on a built `Config` that need more than one field: names that reference each other,
binds that collide, routes that can never match, keys that only make sense in another mode.

Pure: takes a `Config`, returns every `Problem` it finds (never stops at the first), each with a
path such as `routes[2].split[1].pool` and no line; `lb.config.load` attaches the YAML line.
An empty list means the config can be served.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lb.config.base import split_address
from lb.config.listeners import Listener
from lb.config.pools import HealthCheck, Pool
from lb.config.routes import Route
from lb.config.schema import Config
from lb.config.tls_checks import tls_problems

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (a path into the YAML), what, and on which line."""

    path: str  # "routes[2].split[1].pool"; "" for the whole file
    message: str
    line: int | None = None  # 1-based, where known

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return text if self.line is None else f"{text} (line {self.line})"


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
# The last component of a formatted path: ".key", "[3]", '["odd.key"]', or a bare first key.
_LAST_PART = re.compile(r'(?:\.[A-Za-z0-9_\-]+|\[\d+\]|\["(?:[^"\\]|\\.)*"\]|^[A-Za-z0-9_\-]+)$')


def format_path(loc: Iterable[str | int]) -> str:
    """('routes', 2, 'split', 1, 'pool') -> 'routes[2].split[1].pool'.

    Keys that would make the path ambiguous (a pool named "api.v2") are quoted: pools["api.v2"].
    """
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def parent_path(path: str) -> str:
    """'routes[2].split[1].pool' -> 'routes[2].split[1]'; '' when there is no parent."""
    m = _LAST_PART.search(path)
    return path[: m.start()] if m else ""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'pool'?)' for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Skipped:
    """Parts of the YAML that failed the schema, left out of the `Config` being checked (see
    `lb.config.load`): checks leave them alone, and a name defined there is not "unknown".

    `route_index[k]` is the YAML index of `config.routes[k]` (routes left out shift the list);
    `sections` are top-level keys left out whole (e.g. `pools` that is not a mapping)."""

    listeners: frozenset[str] = frozenset()
    pools: frozenset[str] = frozenset()
    routes: frozenset[int] = frozenset()
    sections: frozenset[str] = frozenset()
    route_index: tuple[int, ...] | None = None

    def __bool__(self) -> bool:
        return bool(self.listeners or self.pools or self.routes or self.sections)

    def known(self, kind: str, name: str) -> bool:
        """A listener or pool defined in the YAML but left out: references to it are fine."""
        names = self.listeners if kind == "listener" else self.pools
        return name in names or f"{kind}s" in self.sections

    @property
    def some_routes(self) -> bool:
        return bool(self.routes) or "routes" in self.sections

    @property
    def some_users(self) -> bool:
        """Something that may send traffic to a pool (a route, a listener) was left out."""
        return self.some_routes or bool(self.listeners) or "listeners" in self.sections


_NOTHING_SKIPPED = Skipped()


def validate(config: Config, skipped: Skipped = _NOTHING_SKIPPED) -> list[Problem]:
    """Every cross-field problem in `config`, in the order of the file's sections. `skipped`:
    what failed the schema and is not in `config` (nothing, for a config that passed)."""
    return [Problem(format_path(loc), message) for loc, message in _check(config, skipped)]


def _check(config: Config, skipped: Skipped) -> Iterator[tuple[Loc, str]]:
    yield from _listeners(config, skipped)
    yield from _routes(config, skipped)
    yield from _pools(config, skipped)
    yield from tls_problems(config)
    yield from _binds(config)
    yield from _redis(config)
    yield from _queues(config)


def _indexed_routes(config: Config, skipped: Skipped) -> list[tuple[int, Route]]:
    """(index in the YAML, route) for the routes being checked."""
    index = skipped.route_index
    if index is None:
        return list(enumerate(config.routes))
    return list(zip(index, config.routes, strict=True))


# -- redis -------------------------------------------------------------------------------------


def _redis(config: Config) -> Iterator[tuple[Loc, str]]:
    redis = config.redis
    if redis is None or redis.url is None:
        return
    # A url carries its own database and credentials; a second place to say them would let
    # the two disagree.
    examples = {
        "db": "redis://host:6379/2",
        "username": "redis://user:password@host:6379/0",
        "password": "redis://:password@host:6379/0",
    }
    for key, example in examples.items():
        if getattr(redis, key) is not None:
            yield ("redis", key), f"only with sentinel; with url, put it in the url: {example}"


# -- listeners --------------------------------------------------------------------------------


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    known = list(known)
    hint = did_you_mean(name, known)
    if not hint:
        hint = f" (known {kind}s: {', '.join(known)})" if known else f" (no {kind}s are defined)"
    return f"unknown {kind} {name!r}{hint}"


def _http_listeners(config: Config) -> list[str]:
    return [name for name, listener in config.listeners.items() if listener.mode == "http"]


def _listeners(config: Config, skipped: Skipped) -> Iterator[tuple[Loc, str]]:
    if not config.listeners and not skipped.listeners and "listeners" not in skipped.sections:
        yield ("listeners",), "no listeners: define at least one, e.g. web: {bind: '0.0.0.0:8080'}"
    for name, listener in config.listeners.items():
        loc: Loc = ("listeners", name)
        yield from _l4_keys(config, listener, loc, skipped)
        if listener.mode == "http":
            if listener.pool is not None:
                yield (
                    (*loc, "pool"),
                    "only tcp and udp listeners take a pool; http listeners are served by routes",
                )
            continue
        if listener.pool is None:
            yield (*loc, "pool"), f"required: a {listener.mode} listener sends everything to a pool"
        elif listener.pool not in config.pools and not skipped.known("pool", listener.pool):
            yield (*loc, "pool"), _unknown("pool", listener.pool, config.pools)
        for key in ("max_header_size", "underscores_in_headers"):
            if getattr(listener, key) is not None:
                yield (*loc, key), f"only for http listeners (this one is mode {listener.mode})"


_SNI_PATTERN = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?\.)*[a-z0-9_\-]+$")


def _l4_keys(
    config: Config, listener: Listener, loc: Loc, skipped: Skipped
) -> Iterator[tuple[Loc, str]]:
    """accept_proxy (tcp and http listeners) and SNI routes (tcp listeners only)."""
    if listener.accept_proxy and listener.mode == "udp":
        yield (*loc, "accept_proxy"), "only for tcp and http listeners (this one is mode udp)"
    if listener.routes is None:
        return
    if listener.mode != "tcp":
        hint = " (http listeners are served by the top-level routes)" * (listener.mode == "http")
        yield (
            (*loc, "routes"),
            f"only tcp listeners route by SNI (this one is mode {listener.mode}){hint}",
        )
        return
    if not listener.routes:
        yield (*loc, "routes"), "empty: omit routes to send everything to the listener's pool"
    seen: dict[str, int] = {}
    for k, route in enumerate(listener.routes):
        sni = route.match.sni.lower()
        if not _SNI_PATTERN.match(sni):
            yield (
                (*loc, "routes", k, "match", "sni"),
                f"{route.match.sni!r} is not a server name: use a.example.com or *.example.com",
            )
        elif sni in seen:
            yield (
                (*loc, "routes", k, "match", "sni"),
                f"unreachable: routes[{seen[sni]}] matches {route.match.sni!r} first",
            )
        seen.setdefault(sni, k)
        if route.pool not in config.pools and not skipped.known("pool", route.pool):
            yield (*loc, "routes", k, "pool"), _unknown("pool", route.pool, config.pools)


# -- routes -----------------------------------------------------------------------------------


def _route_listeners(route: Route, config: Config) -> set[str]:
    """The http listeners a route applies to: those it names, or all of them when it names none."""
    if route.listeners is None:
        return set(_http_listeners(config))
    return {
        name
        for name in route.listeners
        if name in config.listeners and config.listeners[name].mode == "http"
    }


def _describe_route(i: int, route: Route) -> str:
    return f"routes[{i}] {route.name!r}" if route.name else f"routes[{i}]"


def _routes(config: Config, skipped: Skipped) -> Iterator[tuple[Loc, str]]:
    names: dict[str, int] = {}
    catch_alls: list[tuple[int, Route, set[str]]] = []
    served: set[str] = set()
    for i, route in _indexed_routes(config, skipped):
        loc: Loc = ("routes", i)
        if route.name is not None:
            if route.name in names:
                first = names[route.name]
                yield (
                    (*loc, "name"),
                    f"duplicate route name {route.name!r} (first at routes[{first}])",
                )
            else:
                names[route.name] = i

        if route.listeners is not None:
            if not route.listeners:
                yield (*loc, "listeners"), "empty: omit listeners to apply to every http listener"
            for k, name in enumerate(route.listeners):
                listener = config.listeners.get(name)
                if listener is None:
                    if not skipped.known("listener", name):
                        yield (*loc, "listeners", k), _unknown("listener", name, config.listeners)
                elif listener.mode != "http":
                    yield (
                        (*loc, "listeners", k),
                        f"listener {name!r} is mode {listener.mode}; routes apply only to http "
                        "listeners (a tcp or udp listener sends everything to its pool)",
                    )

        yield from _route_target(route, loc, config, skipped)
        yield from _route_affinity(route, loc, config)
        yield from _rate_limit(route, loc, config)
        yield from _route_offload(route, loc, config)

        applies = _route_listeners(route, config)
        served |= applies
        for j, before, covered in catch_alls:
            if applies and applies <= covered:
                yield loc, f"unreachable: {_describe_route(j, before)} matches everything before it"
                break
        if route.match.is_catch_all():
            catch_alls.append((i, route, applies))

    if skipped.some_routes:
        return  # a route left out may serve any listener
    for name in _http_listeners(config):
        if name not in served and not config.listeners[name].redirect_https:
            yield ("listeners", name), "no route serves this listener"


def _route_target(
    route: Route, loc: Loc, config: Config, skipped: Skipped
) -> Iterator[tuple[Loc, str]]:
    if route.pool is not None and route.split is not None:
        yield loc, "give either pool or split, not both"
    elif route.pool is None and route.split is None:
        yield loc, "needs a pool or a split to send requests to"
    if (
        route.pool is not None
        and route.pool not in config.pools
        and not skipped.known("pool", route.pool)
    ):
        yield (*loc, "pool"), _unknown("pool", route.pool, config.pools)
    if route.split is None:
        return
    if not route.split:
        yield (*loc, "split"), "empty: list at least one {pool, weight} arm"
        return
    seen: dict[str, int] = {}
    for k, arm in enumerate(route.split):
        if arm.pool not in config.pools:
            if not skipped.known("pool", arm.pool):
                yield (*loc, "split", k, "pool"), _unknown("pool", arm.pool, config.pools)
        elif arm.pool in seen:
            yield (
                (*loc, "split", k, "pool"),
                f"pool {arm.pool!r} is already split[{seen[arm.pool]}]; merge the two arms",
            )
        seen.setdefault(arm.pool, k)
    if all(arm.weight == 0 for arm in route.split):
        yield (*loc, "split"), "every weight is 0: give at least one arm a weight above 0"


def _route_affinity(route: Route, loc: Loc, config: Config) -> Iterator[tuple[Loc, str]]:
    """sticky, force and rollback on a route: all three are about the arms of its split."""
    arms = [arm.pool for arm in route.split or []]
    for key in ("sticky", "force", "rollback"):
        if getattr(route, key) is not None and route.split is None:
            hint = " (for server affinity, set sticky on the pool)" * (key == "sticky")
            yield (*loc, key), f"only for routes with a split (this route has none){hint}"
    if route.split is None:
        return
    if route.force is not None:
        for value, pool in route.force.arms.items():
            if pool not in arms:
                yield (
                    (*loc, "force", "arms", value),
                    f"{pool!r} is not an arm of this route's split (arms: {', '.join(arms)})",
                )
    if route.rollback is not None and len(arms) < 2:
        yield (*loc, "rollback"), "needs a split of two or more arms: a stable one and a canary"
    if route.sticky is not None:
        for pool in arms:
            sticky = config.pools[pool].sticky if pool in config.pools else None
            if sticky is not None and sticky.cookie == route.sticky.cookie:
                yield (
                    (*loc, "sticky", "cookie"),
                    f"pools.{pool}.sticky uses cookie {sticky.cookie!r} too: the two would "
                    "overwrite each other; give one another name",
                )


def _rate_limit(route: Route, loc: Loc, config: Config) -> Iterator[tuple[Loc, str]]:
    limit = route.rate_limit
    if limit is None:
        return
    loc = (*loc, "rate_limit")
    if limit.scope == "shared" and config.redis is None:
        yield (
            (*loc, "scope"),
            "shared counts in Redis, and there is no redis: section; add one, e.g. "
            "redis: {url: 'redis://127.0.0.1:6379/0'}, or use scope: local",
        )
    if limit.scope == "local" and limit.on_store_error is not None:
        yield (
            (*loc, "on_store_error"),
            "only for scope: shared (a local limit counts in the worker and never fails)",
        )


def _route_offload(route: Route, loc: Loc, config: Config) -> Iterator[tuple[Loc, str]]:
    offload = route.offload
    if offload is None:
        return
    if offload.queue not in config.queues:
        yield (*loc, "offload", "queue"), _unknown("queue", offload.queue, config.queues)
    if route.split is not None:
        yield (*loc, "offload"), "only for routes with a pool (a split's arms are not offloaded)"
    if route.name is None:
        yield loc, "a route with offload needs a name: its stored jobs name the route they run on"


def _queues(config: Config) -> Iterator[tuple[Loc, str]]:
    for name, queue in config.queues.items():
        loc: Loc = ("queues", name)
        if queue.job_timeout >= queue.ack_timeout:
            yield (
                (*loc, "job_timeout"),
                f"must be under ack_timeout ({queue.ack_timeout:g}s), or a job still running "
                "is given to a second worker",
            )
        if queue.backoff.base > queue.backoff.max:
            yield (*loc, "backoff", "base"), f"over backoff.max ({queue.backoff.max:g}s)"


# -- pools ------------------------------------------------------------------------------------


def _pool_users(config: Config, skipped: Skipped) -> dict[str, str]:
    """Pool name -> the first thing that sends traffic to it, as a path a user can find."""
    users: dict[str, str] = {}
    for name, listener in config.listeners.items():
        if listener.mode != "http" and listener.pool is not None:
            users.setdefault(listener.pool, format_path(("listeners", name)))
        for k, tcp_route in enumerate(listener.routes or []):
            users.setdefault(tcp_route.pool, format_path(("listeners", name, "routes", k)))
    for i, route in _indexed_routes(config, skipped):
        if route.pool is not None:
            users.setdefault(route.pool, f"routes[{i}]")
        for arm in route.split or []:
            users.setdefault(arm.pool, f"routes[{i}]")
    return users


def _http_pools(config: Config, skipped: Skipped) -> dict[str, str]:
    """Pool name -> the first route that sends http requests to it."""
    pools: dict[str, str] = {}
    for i, route in _indexed_routes(config, skipped):
        for pool in [route.pool, *(arm.pool for arm in route.split or [])]:
            if pool is not None:
                pools.setdefault(pool, f"routes[{i}]")
    return pools


def _pools(config: Config, skipped: Skipped) -> Iterator[tuple[Loc, str]]:
    users = _pool_users(config, skipped)
    http_pools = _http_pools(config, skipped)
    # With a route or listener left out, who uses a pool is not fully known: the checks
    # that rest on a pool's users being only tcp/udp listeners (or none) are not made.
    users_known = not skipped.some_users
    for name, pool in config.pools.items():
        loc: Loc = ("pools", name)
        user = users.get(name)
        if user is not None:
            if not pool.servers:
                yield (*loc, "servers"), f"no servers, yet {user} sends traffic here"
            elif all(server.weight == 0 for server in pool.servers):
                yield (
                    (*loc, "servers"),
                    f"every server has weight 0, yet {user} sends traffic here",
                )
        yield from _servers(pool, loc)
        yield from _balance(pool, loc)
        l4_only = users_known and name in users and name not in http_pools
        yield from _limits(pool, loc, l4_only=l4_only)
        if pool.send_proxy is not None and name in http_pools:
            yield (
                (*loc, "send_proxy"),
                f"only for pools of tcp listeners, yet {http_pools[name]} (http) sends traffic "
                "here: http server connections are kept alive and shared between clients",
            )
        if pool.tls is not None and l4_only:
            yield (
                (*loc, "tls"),
                f"only for pools that http routes use, yet only {user} (tcp/udp) sends traffic "
                "here: it passes the client's bytes through as they are, TLS included",
            )
        if pool.health_check is not None:
            default_type = config.defaults.health_check.type
            yield from _health_check(pool.health_check, (*loc, "health_check"), default_type)
    yield from _health_check(config.defaults.health_check, ("defaults", "health_check"), None)


def _servers(pool: Pool, loc: Loc) -> Iterator[tuple[Loc, str]]:
    seen: dict[tuple[str, int], int] = {}
    for k, server in enumerate(pool.servers):
        host, port = split_address(server.address)
        key = (host.lower(), port)
        if key in seen:
            yield (
                (*loc, "servers", k, "address"),
                f"duplicate server {server.address!r} (also servers[{seen[key]}])",
            )
        else:
            seen[key] = k


def _balance(pool: Pool, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if pool.balance == "hash" and pool.hash_key is None:
        yield (
            (*loc, "balance"),
            "hash needs a hash_key: client_ip, path, header:NAME or cookie:NAME",
        )
    if pool.balance != "hash" and pool.hash_key is not None:
        yield (
            (*loc, "hash_key"),
            f"only used by balance: hash (this pool balances by {pool.balance}); "
            "remove it or set balance: hash",
        )


def _limits(pool: Pool, loc: Loc, l4_only: bool) -> Iterator[tuple[Loc, str]]:
    """slow_start, max_connections and queue (issue 4): where they can take effect."""
    if pool.slow_start is not None and pool.balance in ("hash", "ip_hash"):
        yield (
            (*loc, "slow_start"),
            f"no effect with balance: {pool.balance} (consistent hashing keeps each key on its "
            "server); remove it or balance by round_robin, least_conn, random or p2c",
        )
    limited = [k for k, s in enumerate(pool.servers) if s.max_connections is not None]
    if pool.queue is not None and not limited:
        yield (
            (*loc, "queue"),
            "no effect: requests wait only when every server is at its max_connections; "
            "set max_connections on the servers, or remove queue",
        )
    if l4_only:
        for k in limited:
            yield (
                (*loc, "servers", k, "max_connections"),
                "only for pools that http routes use (tcp/udp listeners do not queue)",
            )


_HTTP_ONLY_CHECK_KEYS = ("path", "expect_status", "host")


def _health_check(
    check: HealthCheck, loc: Loc, default_type: str | None
) -> Iterator[tuple[Loc, str]]:
    kind = check.type or default_type or "http"
    if kind == "tcp":
        whence = "" if check.type else " (from defaults.health_check.type)"
        for key in _HTTP_ONLY_CHECK_KEYS:
            if getattr(check, key) is not None:
                yield (*loc, key), f"only for http health checks; this one is type tcp{whence}"
    if check.expect_status is not None:
        if not check.expect_status:
            yield (*loc, "expect_status"), "empty: list at least one status, e.g. [200]"
        for k, status in enumerate(check.expect_status):
            if not 100 <= status <= 599:
                yield (
                    (*loc, "expect_status", k),
                    f"{status} is not an HTTP status code (100-599)",
                )
    for key in ("interval", "timeout"):
        if getattr(check, key) == 0:
            yield (*loc, key), "must be above 0, e.g. 2s"
    if check.path is not None and (
        not check.path.startswith("/") or any(c.isspace() for c in check.path)
    ):
        yield (*loc, "path"), f"{check.path!r}: write a path with no spaces, e.g. /healthz"
    if check.host is not None and (not check.host or any(c.isspace() for c in check.host)):
        yield (*loc, "host"), f"{check.host!r}: write a host name, e.g. app.example.com"


# -- binds ------------------------------------------------------------------------------------

_WILDCARD_HOSTS = frozenset({"", "*", "0.0.0.0", "::"})


def _binds(config: Config) -> Iterator[tuple[Loc, str]]:
    """Two sockets of one protocol on one port collide when their hosts are equal, or either is
    a wildcard (0.0.0.0:P takes P on every address). Port 0 asks the kernel for a free port."""
    binds: list[tuple[Loc, str, str]] = [
        (("listeners", name, "bind"), listener.bind, "udp" if listener.mode == "udp" else "tcp")
        for name, listener in config.listeners.items()
    ]
    if config.admin is not None:
        binds.append((("admin", "bind"), config.admin.bind, "tcp"))
    taken: list[tuple[Loc, str, str, str, int]] = []
    for loc, bind, proto in binds:
        host, port = split_address(bind)
        host = host.lower()
        for other_loc, other_bind, other_proto, other_host, other_port in taken:
            if port == 0 or proto != other_proto or port != other_port:
                continue
            if host == other_host or host in _WILDCARD_HOSTS or other_host in _WILDCARD_HOSTS:
                owner = format_path(other_loc[:-1])
                yield loc, f"{bind!r} collides with {owner} ({other_bind!r})"
                break
        taken.append((loc, bind, proto, host, port))


__all__ = [
    "Problem",
    "Skipped",
    "did_you_mean",
    "format_path",
    "parent_path",
    "validate",
]

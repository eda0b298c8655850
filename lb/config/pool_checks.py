"""Cross-field checks on `pools`: servers for the traffic sent to a pool, duplicate servers,
`balance`, and the keys that only take effect with something else (hash_key, slow_start,
queue, send_proxy, tls, max_connections) or only for some health checks. Whether a pool is
used by http routes or only by tcp/udp listeners decides several of them. Pure: each check
yields (path, message).
"""

from __future__ import annotations

from collections.abc import Iterator

from lb.config.base import split_address
from lb.config.pools import HealthCheck, Pool
from lb.config.problems import Loc, Skipped, format_path, indexed_routes
from lb.config.schema import Config


def _pool_users(config: Config, skipped: Skipped) -> dict[str, str]:
    """Pool name -> the first thing that sends traffic to it, as a path a user can find."""
    users: dict[str, str] = {}
    for name, listener in config.listeners.items():
        if listener.mode != "http" and listener.pool is not None:
            users.setdefault(listener.pool, format_path(("listeners", name)))
        for k, tcp_route in enumerate(listener.routes or []):
            users.setdefault(tcp_route.pool, format_path(("listeners", name, "routes", k)))
    for i, route in indexed_routes(config, skipped):
        if route.pool is not None:
            users.setdefault(route.pool, f"routes[{i}]")
        for arm in route.split or []:
            users.setdefault(arm.pool, f"routes[{i}]")
    return users


def _http_pools(config: Config, skipped: Skipped) -> dict[str, str]:
    """Pool name -> the first route that sends http requests to it."""
    pools: dict[str, str] = {}
    for i, route in indexed_routes(config, skipped):
        for pool in [route.pool, *(arm.pool for arm in route.split or [])]:
            if pool is not None:
                pools.setdefault(pool, f"routes[{i}]")
    return pools


def pool_problems(config: Config, skipped: Skipped) -> Iterator[tuple[Loc, str]]:
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

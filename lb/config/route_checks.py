"""Cross-field checks on `routes`: duplicate names, the listeners and pools they name, a
split's arms (with sticky, force and rollback), rate limits and offload that need a section
elsewhere, routes that can never match, and http listeners that no route serves. Pure: each
check yields (path, message); routes are named by their index in the YAML.
"""

from __future__ import annotations

from collections.abc import Iterator

from lb.config.problems import Loc, Skipped, indexed_routes, unknown_name
from lb.config.routes import Route
from lb.config.schema import Config


def _http_listeners(config: Config) -> list[str]:
    return [name for name, listener in config.listeners.items() if listener.mode == "http"]


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


def route_problems(config: Config, skipped: Skipped) -> Iterator[tuple[Loc, str]]:
    names: dict[str, int] = {}
    catch_alls: list[tuple[int, Route, set[str]]] = []
    served: set[str] = set()
    for i, route in indexed_routes(config, skipped):
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
                        yield (
                            (*loc, "listeners", k),
                            unknown_name("listener", name, config.listeners),
                        )
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
        yield (*loc, "pool"), unknown_name("pool", route.pool, config.pools)
    if route.split is None:
        return
    if not route.split:
        yield (*loc, "split"), "empty: list at least one {pool, weight} arm"
        return
    seen: dict[str, int] = {}
    for k, arm in enumerate(route.split):
        if arm.pool not in config.pools:
            if not skipped.known("pool", arm.pool):
                yield (*loc, "split", k, "pool"), unknown_name("pool", arm.pool, config.pools)
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
        yield (*loc, "offload", "queue"), unknown_name("queue", offload.queue, config.queues)
    if route.split is not None:
        yield (*loc, "offload"), "only for routes with a pool (a split's arms are not offloaded)"
    if route.name is None:
        yield loc, "a route with offload needs a name: its stored jobs name the route they run on"

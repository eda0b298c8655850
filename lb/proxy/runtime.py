"""Everything a worker builds from one config: routes, pools, per-listener settings.

A `Runtime` is immutable once built and is swapped in one assignment on reload; an exchange
keeps a reference to the runtime it started with, so requests in flight finish on their
config.
"""

from __future__ import annotations

from lb.config.schema import Config
from lb.core.router import CompiledRoute, Router, compile_router
from lb.core.sni import SniRoutes
from lb.filters.affinity import PoolSticky, build_pool_sticky, signer_for
from lb.filters.chain import filters_for
from lb.filters.context import BuildContext, Services
from lb.filters.splits import RouteSplit, build_splits
from lb.proxy.http.chain import Chain
from lb.proxy.listeners import ListenerSettings
from lb.proxy.pool.pool import PoolRuntime


class Current:
    """What a connection reads of its process per request: the newest `Runtime` (a reload
    replaces it) and whether the worker is stopping. One compiled object that the Proxy and its
    connections share: a read is a field load, where an attribute of the plain-Python Proxy is
    a lookup by name each time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.stopping = False


class Runtime:
    def __init__(self, config: Config, services: Services, previous: Runtime | None = None) -> None:
        """`services`: what filters use of the process (metrics, access log). `previous`: the
        runtime this one replaces on reload; servers that stay configured keep their objects
        (see PoolRuntime)."""
        self.config = config
        self.router: Router = compile_router(config)
        defaults = config.defaults
        old: dict[str, PoolRuntime] = previous.pools if previous is not None else {}
        self.pools: dict[str, PoolRuntime] = {
            name: PoolRuntime(name, pool, defaults.timeouts.merged(pool.timeouts), old.get(name))
            for name, pool in config.pools.items()
        }
        # Canary splits and sticky pools (lb.filters): one cookie signer for both.
        signer = signer_for(config)
        self.splits: dict[str, RouteSplit] = build_splits(config, signer)
        self.sticky: dict[str, PoolSticky] = build_pool_sticky(config, self.pools, signer)
        self.listeners = {
            name: ListenerSettings(
                name=name,
                mode=ls.mode,
                bind=ls.bind,
                max_header_size=ls.max_header_size or defaults.max_header_size,
                max_connections=ls.max_connections,
                timeouts=defaults.timeouts.merged(ls.timeouts),
                pool=ls.pool,
                accept_proxy=ls.accept_proxy,
                tls=ls.tls,
                redirect_https=ls.redirect_https,
                hsts=ls.hsts.encode("latin-1") if ls.hsts is not None else None,
                subject_header=(
                    ls.tls.client_subject_header.lower().encode("latin-1")
                    if ls.tls is not None and ls.tls.client_subject_header
                    else None
                ),
                sni=(
                    SniRoutes([(r.match.sni, r.pool) for r in ls.routes], ls.pool)
                    if ls.routes and ls.mode == "tcp"
                    else None
                ),
                underscores_in_headers=ls.underscores_in_headers or "drop",
            )
            for name, ls in config.listeners.items()
        }
        # Each http listener's chain per route, and for requests no route matches (None).
        self.chains: dict[tuple[str, str | None], Chain] = {}
        for name, settings in self.listeners.items():
            if settings.mode != "http":
                continue
            for route in [*self.router.routes(name), None]:
                ctx = BuildContext(
                    config, settings, route, services, signer, self.splits, self.sticky
                )
                self.chains[name, route.name if route is not None else None] = Chain(
                    filters_for(ctx)
                )

    def chain(self, listener: str, route: CompiledRoute | None) -> Chain:
        return self.chains[listener, route.name if route is not None else None]

    def close_idle(self) -> None:
        for pool in self.pools.values():
            pool.close_idle()

    def retire(self, new: Runtime) -> None:
        """This runtime was replaced by `new`: close the idle connections of the servers that
        `new` does not keep (exchanges still running on this one finish on theirs)."""
        kept = {id(s) for pool in new.pools.values() for s in pool.servers}
        for pool in self.pools.values():
            for server in pool.servers:
                if id(server) not in kept:
                    server.close_idle()

    def servers_changed(self, pool: PoolRuntime) -> None:
        """`pool`'s server list changed (discovery): refresh what was built from it."""
        sticky = self.sticky.get(pool.name)
        if sticky is not None:
            sticky.refresh(pool)

"""What a filter is built from: the config, the listener and route of its chain, and the
process's services (lb.filters.chain lists the filters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lb.config.schema import Config
from lb.core.router import CompiledRoute
from lb.core.sticky import CookieSigner
from lb.proxy.http.sink import Upstreams

if TYPE_CHECKING:
    from lb.access_log import AccessLog
    from lb.cache.cache import ResponseCache
    from lb.filters.affinity import PoolSticky
    from lb.filters.splits import RouteSplit
    from lb.proxy.listeners import ListenerSettings
    from lb.proxy.pool.pool import PoolRuntime
    from lb.request_metrics import RequestMetrics
    from lb.stores import Stores


class Services(Upstreams, Protocol):
    """What filters use of the process they run in (the `Proxy`), kept across reloads; as
    `Upstreams`, it lets a filter make upstream calls of its own (lb.proxy.http.call)."""

    metrics: RequestMetrics
    access_log: AccessLog
    stores: Stores  # cache, job queue, rate counter (lb.stores); replaced on reload
    cache: ResponseCache  # the response cache's tiers (lb.cache)

    @property
    def runtime(self) -> HasPools:
        """The newest config (its pools)."""


class HasPools(Protocol):
    pools: dict[str, PoolRuntime]


@dataclass(frozen=True)
class BuildContext:
    config: Config
    listener: ListenerSettings
    route: CompiledRoute | None  # None: the chain for requests no route matches
    services: Services
    signer: CookieSigner
    splits: dict[str, RouteSplit]  # by route name
    sticky: dict[str, PoolSticky]  # by pool name

"""Everything a worker builds from one config: routes, pools, per-listener settings.

A `Runtime` is immutable once built and is swapped in one assignment on reload; an exchange
keeps a reference to the runtime it started with, so requests in flight finish on their
config.
"""

from __future__ import annotations

from dataclasses import dataclass

from lb.config.schema import Config, Pool, ResolvedTimeouts, split_address
from lb.core.balancer import Balancer, ServerState, make_balancer
from lb.core.http import RequestHead
from lb.core.router import Router, compile_router
from lb.core.split import Split
from lb.proxy.upstream import UpstreamServer


class PoolRuntime:
    __slots__ = ("_by_state", "_key_kind", "_key_name", "balancer", "name", "servers", "timeouts")

    def __init__(self, name: str, pool: Pool, timeouts: ResolvedTimeouts) -> None:
        self.name = name
        self.timeouts = timeouts
        self.servers: list[UpstreamServer] = []
        for server in pool.servers:
            host, port = split_address(server.address)
            state = ServerState(server.address, server.weight, server.backup)
            self.servers.append(UpstreamServer(name, state, host, port))
        self._by_state = {s.state: s for s in self.servers}
        self.balancer: Balancer = make_balancer(pool.balance, [s.state for s in self.servers])
        kind, _, key_name = (pool.hash_key or "").partition(":")
        if pool.balance == "ip_hash":
            kind = "client_ip"
        self._key_kind = kind
        self._key_name = key_name.lower()

    def choose(
        self, head: RequestHead, client_ip: str, exclude: set[ServerState] | tuple[()] = ()
    ) -> UpstreamServer | None:
        state = self.balancer.pick(self._key(head, client_ip) if self._key_kind else None, exclude)
        return None if state is None else self._by_state[state]

    def _key(self, head: RequestHead, client_ip: str) -> bytes | None:
        kind = self._key_kind
        if kind == "client_ip":
            return client_ip.encode()
        if kind == "header":
            return head.index.get(self._key_name.encode("latin-1"))
        if kind == "cookie":
            value = head.cookie(self._key_name)
            return None if value is None else value.encode("latin-1")
        if kind == "path":
            return head.path.encode()
        return None

    def close_idle(self) -> None:
        for server in self.servers:
            server.close_idle()

    def __repr__(self) -> str:
        return f"<PoolRuntime {self.name} servers={len(self.servers)}>"


@dataclass(frozen=True)
class ListenerSettings:
    name: str
    mode: str
    bind: str
    max_header_size: int
    max_connections: int | None
    timeouts: ResolvedTimeouts
    pool: str | None


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.router: Router = compile_router(config)
        defaults = config.defaults
        self.pools = {
            name: PoolRuntime(name, pool, defaults.timeouts.merged(pool.timeouts))
            for name, pool in config.pools.items()
        }
        self.splits = {
            route.name: Split(route.split)
            for routes in (self.router.routes(n) for n in config.listeners)
            for route in routes
            if route.split
        }
        self.listeners = {
            name: ListenerSettings(
                name=name,
                mode=ls.mode,
                bind=ls.bind,
                max_header_size=ls.max_header_size or defaults.max_header_size,
                max_connections=ls.max_connections,
                timeouts=defaults.timeouts.merged(ls.timeouts),
                pool=ls.pool,
            )
            for name, ls in config.listeners.items()
        }

    def close_idle(self) -> None:
        for pool in self.pools.values():
            pool.close_idle()

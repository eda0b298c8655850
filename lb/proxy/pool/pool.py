"""One pool at run time: its servers, balancer, health, waiting room and retry budget."""

from __future__ import annotations

import ssl
from collections.abc import Collection

from lb.config.base import ResolvedTimeouts, split_address
from lb.config.pools import Pool, WaitingRoomConfig
from lb.core.balancer import Balancer, ServerState, make_balancer
from lb.core.http import RequestHead
from lb.core.retry import RetryBudget
from lb.proxy.health.checker import PoolHealth
from lb.proxy.http.connection import UpstreamServer
from lb.proxy.pool.waiting import SlowStartTimer, WaitingRoom
from lb.proxy.tls.contexts import client_context, file_stamp


class PoolRuntime:
    """One pool at run time: its servers, balancer and health.

    Servers are kept by their configured address in `members`: an IP address is one server; a
    name is one server per address it resolves to (`set_resolved`, called by
    lb.proxy.pool.discovery), labelled `NAME:PORT (IP)`, or one server connecting to the name
    until it has been resolved. `servers` is every member, in config order.

    A reload builds a new PoolRuntime from the previous one (`previous`): a configured server
    that stays keeps its `UpstreamServer` and `ServerState` objects, so its idle connections,
    in-flight count, health and drain carry on; exchanges of the old config still running
    count on the same objects.
    """

    __slots__ = (
        "_by_state",
        "_ca_stamp",
        "_key_kind",
        "_key_name",
        "_tls",
        "balancer",
        "budget",
        "config",
        "drained",
        "health",
        "members",
        "name",
        "passive",
        "send_proxy",
        "servers",
        "slow_start",
        "timeouts",
        "waiting",
    )

    def __init__(
        self,
        name: str,
        pool: Pool,
        timeouts: ResolvedTimeouts,
        previous: PoolRuntime | None = None,
    ) -> None:
        self.name = name
        self.config = pool
        self.timeouts = timeouts
        self.send_proxy = pool.send_proxy  # "v1" | "v2" | None: PROXY header to each server
        # Configured addresses drained in this process (Proxy.drain; under `lb run` the
        # supervisor's flag, read with the health verdicts, overrides it).
        self.drained: set[str] = set(previous.drained) if previous is not None else set()
        self._tls: ssl.SSLContext | None = None
        # The CA file as it was read: a reload after it was rewritten reads it again.
        self._ca_stamp = file_stamp([pool.tls.ca]) if pool.tls is not None and pool.tls.ca else ()
        if pool.tls is not None:
            if (
                previous is not None
                and previous.config.tls == pool.tls
                and previous._ca_stamp == self._ca_stamp
            ):
                self._tls = previous._tls  # keeps its TLS sessions
            else:
                self._tls = client_context(pool.tls)  # one per pool: its sessions are shared
        self.members: dict[str, list[UpstreamServer]] = {}
        for server in pool.servers:
            kept = previous.members.get(server.address) if previous is not None else None
            if kept:
                for upstream in kept:
                    upstream.state.weight = server.weight
                    upstream.state.backup = server.backup
                    upstream.max_connections = server.max_connections
                    if upstream.ssl is not self._tls:  # pool tls changed: new sockets
                        upstream.close_idle()
                        self._set_tls(upstream, server.address)
                self.members[server.address] = list(kept)
            else:
                host, port = split_address(server.address)
                self.members[server.address] = [self._new_server(server.address, host, port)]
        self.servers: list[UpstreamServer] = [s for m in self.members.values() for s in m]
        for upstream in self.servers:  # also for servers kept from before a reload
            upstream.idle_timeout = self.timeouts.idle
        self._by_state = {s.state: s for s in self.servers}
        # Health: active verdicts and passive ejection set `state.healthy`
        # (lb.proxy.health.checker).
        # `passive` is the same object when the pool has passive checks, else None, so the
        # proxy pays one attribute test per answer for a pool without them.
        self.health = PoolHealth(
            name, [s.state for s in self.servers], pool.passive, self._groups()
        )
        self.passive: PoolHealth | None = self.health if pool.passive is not None else None
        # Resilience (issue 4): the retry budget (lb.core.retry); the queue where requests wait
        # when every server is at its max_connections, None when no server has one; slow start
        # (lb.proxy.pool.waiting). Carried over a reload, so counts, waiters and ramps go on.
        self.budget: RetryBudget = previous.budget if previous is not None else RetryBudget()
        self.waiting: WaitingRoom | None = _waiting_room(
            name, pool, previous.waiting if previous is not None else None
        )
        self.slow_start: SlowStartTimer | None = _slow_start(
            pool, previous.slow_start if previous is not None else None
        )
        if self.slow_start is not None:
            self.health.on_up = self.slow_start.server_up
        self.balancer: Balancer = make_balancer(pool.balance, [s.state for s in self.servers])
        kind, _, key_name = (pool.hash_key or "").partition(":")
        if pool.balance == "ip_hash":
            kind = "client_ip"
        self._key_kind = kind
        self._key_name = key_name.lower()

    def choose(
        self, head: RequestHead, client_ip: str, exclude: Collection[ServerState] = ()
    ) -> UpstreamServer | None:
        state = self.balancer.pick(self._key(head, client_ip) if self._key_kind else None, exclude)
        return None if state is None else self._by_state[state]

    @property
    def hashes_client_ip(self) -> bool:
        return self._key_kind == "client_ip"

    def choose_for_client(
        self, client_ip: str, exclude: set[ServerState] | tuple[()] = ()
    ) -> UpstreamServer | None:
        """L4: no request head, so only ip_hash (or hash on client_ip) has a key."""
        key = client_ip.encode() if self._key_kind == "client_ip" else None
        state = self.balancer.pick(key, exclude)
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

    # Servers: built, resolved, drained -------------------------------------------------------

    def _new_server(self, address: str, host: str, port: int, label: str = "") -> UpstreamServer:
        entry = next(s for s in self.config.servers if s.address == address)
        state = ServerState(label or address, entry.weight, entry.backup)
        state.drained = address in self.drained
        upstream = UpstreamServer(self.name, state, host, port)
        upstream.max_connections = entry.max_connections
        self._set_tls(upstream, address)
        return upstream

    def _set_tls(self, upstream: UpstreamServer, address: str) -> None:
        upstream.ssl = self._tls
        tls = self.config.tls
        # The configured name, not a resolved IP, is what the certificate names.
        upstream.server_hostname = (tls.sni or split_address(address)[0]) if tls else None

    def _groups(self) -> dict[str, list[str]]:
        """Configured address -> the addresses of its servers, where they differ."""
        return {
            address: [s.address for s in members]
            for address, members in self.members.items()
            if [s.address for s in members] != [address]
        }

    def set_resolved(self, address: str, ips: list[str]) -> bool:
        """The configured server `address` (a name) now resolves to `ips`: servers for new
        addresses join; those of vanished ones are drained (their requests in flight finish)
        and dropped. True when the pool's servers changed."""
        members = self.members.get(address)
        if members is None or not ips:
            return False
        port = split_address(address)[1]
        by_ip = {s.host: s for s in members}
        joined = [
            by_ip.get(ip) or self._new_server(address, ip, port, f"{address} ({ip})") for ip in ips
        ]
        if joined == members:
            return False
        for server in members:
            if server not in joined:
                server.state.drained = True  # in case an old config's exchange still picks
                server.close_idle()
        self.members[address] = joined
        self.servers = [s for m in self.members.values() for s in m]
        self._by_state = {s.state: s for s in self.servers}
        states = [s.state for s in self.servers]
        self.health.set_servers(states, self._groups())
        self.balancer.servers = states
        return True

    def set_drained(self, address: str, drained: bool) -> bool:
        """Drain (or enable) a configured server, or one resolved server by its address:
        no new requests or connections; those in flight finish. False when unknown."""
        members = self.members.get(address)
        if members is None:
            members = [s for s in self.servers if s.address == address]
            if not members:
                return False
        else:
            if drained:
                self.drained.add(address)
            else:
                self.drained.discard(address)
        for server in members:
            server.state.drained = drained
        return True

    def __repr__(self) -> str:
        return f"<PoolRuntime {self.name} servers={len(self.servers)}>"


def _waiting_room(name: str, pool: Pool, previous: WaitingRoom | None) -> WaitingRoom | None:
    if not any(s.max_connections is not None for s in pool.servers):
        return None
    settings = pool.queue or WaitingRoomConfig()
    if previous is None:
        return WaitingRoom(name, settings.max, settings.timeout)
    previous.max, previous.timeout = settings.max, settings.timeout  # its waiters stay
    return previous


def _slow_start(pool: Pool, previous: SlowStartTimer | None) -> SlowStartTimer | None:
    if pool.slow_start is None:
        if previous is not None:
            previous.close()  # ramps end: full weights
        return None
    if previous is None:
        return SlowStartTimer(pool.slow_start)
    previous.set_duration(pool.slow_start)
    return previous

"""One worker: its listening sockets, its connections, and what every request reports.

A worker binds each listener itself with SO_REUSEPORT, so N workers share a port and the kernel
spreads connections between them. `Proxy.runtime` is replaced in one assignment on reload;
connections pick it up for their next request, while exchanges already running finish on the
runtime they started with. The new runtime is built from the old one, so servers that stay
keep their idle connections, in-flight counts, health and drain (lb.proxy.runtime). A reload
also applies listener changes: a listener added (or whose bind, mode or tls-or-not changed) is
bound, one removed stops accepting while its open connections finish.

Shutdown, in order: stop accepting; close connections that are idle between requests; let
requests in flight finish (their connections close after the response) for up to the grace
period; abort what is left.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from lb.access_log import AccessLog
from lb.cache.cache import ResponseCache
from lb.config.schema import Config
from lb.core.errors import Reason
from lb.metrics import (
    ACTIVE_CONNECTIONS,
    CONNECTION_ERRORS,
    SERVER_IN_FLIGHT,
    UPSTREAM_CONNECT_ERRORS,
)
from lb.offload.inprocess import InProcessOffload
from lb.protocols import parser_kind as default_parser_kind
from lb.proxy.health.channel import worker_health
from lb.proxy.http.connection import UpstreamConnection, UpstreamServer, open_connection
from lb.proxy.l4.common import publish_bytes
from lb.proxy.l4.reactor import Reactor
from lb.proxy.l4.tcp import TcpServer
from lb.proxy.listeners import ListenerSettings
from lb.proxy.pool.discovery import Discovery
from lb.proxy.runtime import Current, Runtime
from lb.proxy.sockets import listening_socket
from lb.proxy.timers import Ticker
from lb.proxy.tls.contexts import ListenerTls, TlsSetupError
from lb.proxy.tls.listener import TlsServer
from lb.request_metrics import RequestMetrics
from lb.stores import CacheStore, Stores, build_stores, retire

if TYPE_CHECKING:
    pass

log = logging.getLogger("lb.worker")

CERTIFICATE_CHECK_INTERVAL = 1.0  # seconds between looks at the certificate files' mtimes
ACCESS_LOG_EXIT_WAIT = 5.0  # seconds a stopping worker waits for its last access log lines


class Proxy:
    def __init__(
        self, config: Config, *, reuse_port: bool = True, parser_kind: str | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.parser_kind = parser_kind or default_parser_kind()
        self.reuse_port = reuse_port
        self.ticker = Ticker(self.loop)
        self.health = worker_health()  # active checks: probed here, or read from lb run
        self.access_log = AccessLog(config.access_log)
        self.metrics = RequestMetrics()
        # Cache, job queue and rate counter: in-process, or one Redis client per process that
        # a reload keeps while the `redis:` section stays the same (lb.stores).
        self.stores: Stores = build_stores(config)
        self.cache = ResponseCache(config.cache, self._shared_cache())
        self.current = Current(Runtime(config, self))
        self.servers: dict[str, asyncio.AbstractServer] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.connections: dict[str, set[Any]] = {}
        self._active: dict[str, int] = {}  # lb_active_connections as last published
        self._in_flight: dict[tuple[str, str], int] = {}  # lb_server_in_flight, likewise
        self._flush_handle: asyncio.TimerHandle | None = None
        self.tls: dict[str, ListenerTls] = {}  # listeners that terminate TLS
        self._tls_handle: asyncio.TimerHandle | None = None
        self.discovery = Discovery()  # names in server addresses; `.resolve` is injectable
        self._reactor: Reactor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Listeners being bound after a reload (await it to know they are up).
        self.listening: asyncio.Task[None] | None = None
        self.offload = InProcessOffload(self)

    # Start and stop -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.start_upstreams()
        for settings in self.runtime.listeners.values():
            await self._listen(settings)
        self._watch_tls()
        self.offload.sync()  # consumers of in-process queues (lb.offload.inprocess)

    async def start_upstreams(self) -> None:
        """What calls to pools need, without listening: the store connection, timers, health
        checks, name resolution. `lb worker` starts only this."""
        if self.stores.redis is not None:
            self.stores.redis.start()  # connects in the background; down until it answers
        self.cache.start()
        self.ticker.start()
        self.health.start(self.runtime)
        self._schedule_flush()
        await self.discovery.start(self.runtime)  # names resolved before the first request

    def _watch_tls(self) -> None:
        if self.tls and self._tls_handle is None:
            self._tls_handle = self.loop.call_later(
                CERTIFICATE_CHECK_INTERVAL, self._watch_certificates
            )

    async def _listen(self, settings: ListenerSettings) -> None:
        if settings.mode == "udp":
            from lb.proxy.l4.udp import start_udp

            self.addresses[settings.name] = await start_udp(self, settings)
            return
        tls = None
        if settings.tls is not None:
            tls = ListenerTls(settings.name, settings.tls)
        sock = listening_socket(settings.bind, self.reuse_port)
        # setdefault: a listener bound again by a reload keeps counting its old connections.
        self.connections.setdefault(settings.name, set())
        server: asyncio.AbstractServer
        if settings.mode == "tcp":  # (tcp listeners have no tls: passthrough only)
            server = TcpServer(self, sock, settings.name)
        elif tls is not None:
            factory = self._factory(settings)
            server = TlsServer(self, sock, tls, settings.name, settings.accept_proxy, factory)
        else:
            server = await self.loop.create_server(self._factory(settings), sock=sock, backlog=4096)
        self.servers[settings.name] = server
        if tls is not None:  # watched from now on (not if the bind failed)
            self.tls[settings.name] = tls
        self.addresses[settings.name] = sock.getsockname()[:2]
        log.info("listening on %s (%s, %s)", settings.bind, settings.name, settings.mode)

    @property
    def runtime(self) -> Runtime:
        """The newest config's runtime (a kept-alive connection's next request sees it)."""
        return self.current.runtime

    @runtime.setter
    def runtime(self, runtime: Runtime) -> None:
        self.current.runtime = runtime

    @property
    def stopping(self) -> bool:
        return self.current.stopping

    @stopping.setter
    def stopping(self, stopping: bool) -> None:
        self.current.stopping = stopping

    @property
    def reactor(self) -> Reactor:
        """The epoll of the sockets lb drives itself (tcp listeners), made on first use."""
        if self._reactor is None:
            self._reactor = Reactor(self.loop)
        return self._reactor

    def _factory(self, settings: ListenerSettings) -> Callable[[], asyncio.Protocol]:
        name = settings.name
        from lb.proxy.http.client import ClientConnection

        return lambda: ClientConnection(self, self.runtime.listeners[name])

    def reload(self, config: Config) -> None:
        """Swap in a new config: new connections and new requests use it at once; listeners
        added are bound in the background (`self.listening`)."""
        old = self.runtime
        old_stores = self.stores
        self.stores = build_stores(config, old_stores)
        if self.stores is not old_stores:
            self._background(retire(old_stores, self.stores))
        self.cache.reconfigure(config.cache, self._shared_cache())
        try:
            runtime = Runtime(config, self, previous=old)
        except (OSError, ssl.SSLError) as e:  # e.g. a pool's CA file went away since the check
            log.error("reload refused, the running config stays: %s", e)
            return
        self.runtime = runtime
        added = self._listener_changes(old, runtime)
        self._reload_tls()
        self.health.reload(old, self.runtime)
        self.discovery.reload(runtime)
        self.access_log.flush()
        old.retire(runtime)
        if self.servers:  # (a Proxy that listens: lb worker runs its own consumers)
            self.offload.sync()
        if added and not self.stopping:
            self.listening = self.loop.create_task(self._listen_added(added, self.listening))

    def _listener_changes(self, old: Runtime, new: Runtime) -> list[ListenerSettings]:
        """Stop the listeners `new` removed or changed; return the ones to bind."""

        def key(settings: ListenerSettings) -> tuple[str, str, bool]:
            return settings.bind, settings.mode, settings.tls is not None

        added = []
        for name, settings in old.listeners.items():
            now = new.listeners.get(name)
            if now is None or key(now) != key(settings):
                self._unlisten(name)
        for name, settings in new.listeners.items():
            if name not in self.servers:
                added.append(settings)
        return added

    def _unlisten(self, name: str) -> None:
        """Stop accepting on listener `name`; its connections idle between requests close,
        those with a request in flight finish it."""
        server = self.servers.pop(name, None)
        if server is None:
            return
        server.close()
        self.addresses.pop(name, None)
        self.tls.pop(name, None)
        for conn in list(self.connections.get(name, ())):
            if getattr(conn, "idle", False):
                conn.close()
        log.info("stopped listening on %s", name)

    async def _listen_added(
        self, added: list[ListenerSettings], before: asyncio.Task[None] | None
    ) -> None:
        if before is not None:
            await asyncio.wait([before])  # one reload's binds at a time
        for settings in added:
            current = self.runtime.listeners.get(settings.name)
            if current is None or current.bind != settings.bind or self.stopping:
                continue  # changed again by a later reload
            if settings.name in self.servers:
                continue
            try:
                await self._listen(current)
            except (OSError, ssl.SSLError, TlsSetupError) as err:
                # (TlsSetupError: certificate files broken since the reload checked them.)
                log.error(
                    "listener %s: cannot listen on %s: %s; fix it, then reload",
                    settings.name,
                    settings.bind,
                    err,
                )
        self._watch_tls()

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` without waiting for it; a failure is logged, not lost."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("background task failed: %r", task.exception())

        task.add_done_callback(done)

    def drain(self, pool: str, address: str, drained: bool = True) -> bool:
        """Drain (or enable, `drained=False`) a server in this worker: it gets no new requests,
        those in flight finish. `address` as configured (every server a name resolves to) or
        one resolved server's address. False when there is no such server."""
        runtime_pool = self.runtime.pools.get(pool)
        return runtime_pool is not None and runtime_pool.set_drained(address, drained)

    # TLS certificates: reloaded with the config, and when their files change -----------------

    def _reload_tls(self) -> None:
        # (A listener that gained or lost tls is not here: _listener_changes unbound it, and
        # _listen_added binds it again.)
        for name, tls in self.tls.items():
            settings = self.runtime.listeners.get(name)
            if settings is not None and settings.tls is not None:
                tls.reload(settings.tls)

    def _watch_certificates(self) -> None:
        for tls in self.tls.values():
            tls.refresh()
        self._tls_handle = self.loop.call_later(
            CERTIFICATE_CHECK_INTERVAL, self._watch_certificates
        )

    async def shutdown(self, grace: float) -> None:
        self.stopping = True
        for server in self.servers.values():
            server.close()
        deadline = self.loop.time() + grace
        for conns in self.connections.values():
            for conn in list(conns):
                if getattr(conn, "idle", False):
                    conn.close()  # idle keep-alive: nothing to wait for
        while any(self.connections.values()) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conns in self.connections.values():
            for conn in list(conns):
                conn.abort()
        await self.offload.stop(max(0.0, deadline - self.loop.time()))
        self.runtime.close_idle()
        self.health.stop()
        self.discovery.stop()
        self.ticker.stop()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self._tls_handle is not None:
            self._tls_handle.cancel()
        if self._reactor is not None:
            self._reactor.close()
        self.metrics.flush()
        self._publish_active()
        self._publish_in_flight()
        publish_bytes()
        # The last lines are written before the process exits (bounded: the disk may hang).
        self.access_log.close(wait=ACCESS_LOG_EXIT_WAIT)
        self.cache.flush_metrics()
        await self.cache.close()
        await retire(self.stores, None)

    def _shared_cache(self) -> CacheStore | None:
        """The cache's shared tier: Redis when configured; else the cache is in-process."""
        return self.stores.cache if self.stores.redis is not None else None

    def _schedule_flush(self) -> None:
        self.metrics.flush()
        self.cache.flush_metrics()
        self._publish_active()
        self._publish_in_flight()
        publish_bytes()
        self.access_log.maybe_flush()
        self._flush_handle = self.loop.call_later(0.25, self._schedule_flush)

    # Connection accounting ----------------------------------------------------------------

    def _publish_active(self) -> None:
        # lb_active_connections is set from the sets' sizes at each flush rather than moved
        # per connection: a gauge's .labels().inc() (a lock and an mmap write in multiprocess
        # mode) was ~7% of a short tcp connection's CPU.
        for name, conns in self.connections.items():
            if self._active.get(name) != len(conns):
                self._active[name] = len(conns)
                ACTIVE_CONNECTIONS.labels(name).set(len(conns))

    def _publish_in_flight(self) -> None:
        # Sampled at each flush like lb_active_connections, never moved per request; by the
        # configured address (a name's resolved servers summed), as /api/v1/status shows it.
        now = {
            (name, address): sum(s.state.in_flight for s in members)
            for name, pool in self.runtime.pools.items()
            for address, members in pool.members.items()
        }
        for key, count in now.items():
            if self._in_flight.get(key) != count:
                SERVER_IN_FLIGHT.labels(*key).set(count)
        for key in self._in_flight.keys() - now.keys():  # gone with a reload
            SERVER_IN_FLIGHT.labels(*key).set(0)
        self._in_flight = now

    def connection_opened(self, conn: Any) -> None:
        name = conn.listener.name
        conns = self.connections.setdefault(name, set())
        limit = conn.listener.max_connections
        if (limit is not None and len(conns) >= limit) or self.stopping:
            self.count_error(name, "max_connections" if not self.stopping else "stopping")
            conn.closed = True
            conn.abort()
            return
        conns.add(conn)
        self.ticker.watched.add(conn)

    def connection_closed(self, conn: Any) -> None:
        self.ticker.watched.discard(conn)
        conns = self.connections.get(conn.listener.name)
        if conns is not None:
            conns.discard(conn)

    def count_error(self, listener: str, cause: str) -> None:
        CONNECTION_ERRORS.labels(listener, cause).inc()

    def count_connect_error(self, pool: str, server: str, cause: str) -> None:
        UPSTREAM_CONNECT_ERRORS.labels(pool, server, cause).inc()

    def connect(self, server: UpstreamServer, timeout: float) -> Awaitable[UpstreamConnection]:
        """A new connection to `server` for an upstream call (lb.proxy.http.call)."""
        return open_connection(server, self.ticker, self.parser_kind, timeout)

    # What a connection refused before any request reports (requests: lb.filters) -------

    def log_refusal(self, conn: Any, reason: Reason, detail: str) -> None:
        """A connection refused before any request could be parsed (e.g. a head timeout)."""
        if self.access_log.enabled:
            self.access_log.log(
                {
                    "time": round(time.time(), 3),
                    "client": conn.client_ip,
                    "listener": conn.listener.name,
                    "status": reason.status,
                    "error": detail,
                }
            )
        self.metrics.observe(conn.listener.name, "-", "-", "", reason.status, 0.0)

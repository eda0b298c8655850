"""Cookie-insert server affinity for a pool (`pools.NAME.sticky: {cookie, ttl}`).

The first answer from a pool sets a cookie naming its server opaquely (`lb.core.sticky`); a
later request carrying it goes to that server while the server can take it (healthy, not
drained, weight above 0, not already failed on this request). Otherwise the request is
balanced as a new client's would be and the cookie is issued again, naming the new server.
A cookie that is forged, expired or names a server no longer in the pool is ignored.

Also the signer shared by every sticky cookie of one `Runtime`, and its secret.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

from lb.config.routes import StickyCookie
from lb.config.schema import Config
from lb.core.balancer import ServerState
from lb.core.http import RequestHead
from lb.core.sticky import SECRET_ENV, CookieSigner, derive_secret, set_cookie_value
from lb.proxy.http.session import Session

if TYPE_CHECKING:
    from lb.proxy.http.connection import UpstreamServer
    from lb.proxy.pool.pool import PoolRuntime

log = logging.getLogger("lb.sticky")

__all__ = ["PoolSticky", "build_pool_sticky", "signer_for"]


def signer_for(config: Config) -> CookieSigner:
    """`sticky_secret`, else $LB_STICKY_SECRET, else derived from what a reload cannot change
    (the listeners and admin.bind), so cookies outlive reloads and instances started from the
    same config file agree."""
    fixed = {
        "listeners": {name: [ls.bind, ls.mode] for name, ls in config.listeners.items()},
        "admin": config.admin.bind if config.admin is not None else None,
    }
    fallback = json.dumps(fixed, sort_keys=True).encode()
    return CookieSigner(derive_secret(config.sticky_secret, os.environ.get(SECRET_ENV), fallback))


def uses_sticky(config: Config) -> bool:
    return any(r.sticky for r in config.routes) or any(p.sticky for p in config.pools.values())


class PoolSticky:
    __slots__ = ("_by_ident", "_ident_of", "cookie", "signer", "ttl")

    def __init__(self, pool: PoolRuntime, sticky: StickyCookie, signer: CookieSigner) -> None:
        self.cookie = sticky.cookie
        self.ttl = sticky.ttl
        self.signer = signer
        self._by_ident: dict[str, UpstreamServer] = {}
        self._ident_of: dict[ServerState, str] = {}
        self.refresh(pool)

    def refresh(self, pool: PoolRuntime) -> None:
        """Name the pool's servers again (built, or changed by discovery)."""
        by_ident: dict[str, UpstreamServer] = {}
        ident_of: dict[ServerState, str] = {}
        for server in pool.servers:
            ident = self.signer.ident("server", pool.name, server.address)
            by_ident[ident] = server
            ident_of[server.state] = ident
        self._by_ident, self._ident_of = by_ident, ident_of

    def choose(
        self,
        pool: PoolRuntime,
        head: RequestHead,
        client_ip: str,
        exclude: Collection[ServerState],
        secure: bool,
    ) -> tuple[UpstreamServer | None, bytes | None]:
        """The server for this request and the Set-Cookie value to send (None: keep the
        client's cookie, it still names this server)."""
        now = time.time()
        ident = self.signer.verify(self.cookie, head.cookie(self.cookie), now)
        if ident is not None:
            server = self._by_ident.get(ident)
            if server is not None:
                s = server.state
                if s.healthy and not s.drained and s.weight > 0 and s not in exclude:
                    return server, None
        server = pool.choose(head, client_ip, exclude)
        if server is None:
            return None, None
        value = self.signer.issue(self.cookie, self._ident_of[server.state], int(now + self.ttl))
        return server, set_cookie_value(self.cookie, value, self.ttl, secure)

    def choose_for(
        self, pool: PoolRuntime, session: Session, exclude: Collection[ServerState]
    ) -> UpstreamServer | None:
        """A `Chooser` for the session's call; the cookie to send waits in `session.vars`."""
        assert session.head is not None
        server, cookie = self.choose(pool, session.head, session.client_ip, exclude, session.secure)
        if cookie is not None:
            session.vars = {**(session.vars or {}), "server_cookie": cookie}
        return server

    def __repr__(self) -> str:
        return f"<PoolSticky cookie={self.cookie} servers={len(self._by_ident)}>"


def build_pool_sticky(
    config: Config, pools: dict[str, PoolRuntime], signer: CookieSigner
) -> dict[str, PoolSticky]:
    """The pools with `sticky`, by name (empty when none has it: the request path then pays
    one falsy check)."""
    return {
        name: PoolSticky(pools[name], pool.sticky, signer)
        for name, pool in config.pools.items()
        if pool.sticky is not None
    }

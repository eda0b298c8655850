"""Server affinity as a filter: the session's call chooses through the pool's `PoolSticky`
(lb.filters.affinity), and the server's answer carries its cookie."""

from __future__ import annotations

from lb.core.http import ResponseHead
from lb.filters.affinity import PoolSticky
from lb.filters.context import BuildContext
from lb.proxy.http.pipeline import Filter, RequestResult
from lb.proxy.http.session import Session


class StickyServer(Filter):
    """Server affinity for the pools of one route that have `sticky`: the session's call
    chooses through the pool's `PoolSticky`, and the server's answer carries its cookie."""

    name = "sticky"

    def __init__(self, by_pool: dict[str, PoolSticky], route_pool: str | None) -> None:
        self.by_pool = by_pool
        self.route_pool = route_pool

    def on_request(self, session: Session) -> RequestResult:
        sticky = self.by_pool.get(session.pool or self.route_pool or "")
        if sticky is not None:
            session.choose = sticky.choose_for
        return None

    def on_response_head(self, session: Session, head: ResponseHead, from_server: bool) -> None:
        if from_server and session.vars is not None:
            cookie = session.vars.get("server_cookie")
            if cookie is not None:
                session.add_response_field(b"set-cookie", cookie)


def build(ctx: BuildContext) -> Filter | None:
    route = ctx.route
    if route is None or not ctx.sticky:
        return None
    pools = [route.pool] if route.pool is not None else [pool for pool, _ in route.split]
    by_pool = {p: ctx.sticky[p] for p in pools if p in ctx.sticky}
    return StickyServer(by_pool, route.pool) if by_pool else None

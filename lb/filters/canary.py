"""The canary split as a filter: the arm (pool) before the server is chosen, the sticky arm's
cookie on the arm's answer, and each answer counted for the arm (lb.filters.splits)."""

from __future__ import annotations

from lb.core.http import ResponseHead
from lb.filters.context import BuildContext
from lb.filters.splits import SEED_ENV, RouteSplit, rearm_all
from lb.proxy.http.pipeline import Filter, RequestResult
from lb.proxy.http.session import Session

__all__ = ["SEED_ENV", "CanarySplit", "build", "rearm_all"]


class CanarySplit(Filter):
    """The route's split as a filter: picks the arm (the session's pool) before the server is
    chosen, sends the sticky arm's cookie with the arm's answer, and counts the answer for the
    arm's metrics and rollback."""

    name = "canary"

    def __init__(self, split: RouteSplit) -> None:
        self.split = split

    def on_request(self, session: Session) -> RequestResult:
        assert session.head is not None
        pool, cookie = self.split.pick(session.head, session.secure)
        session.pool = pool
        if cookie is not None:
            session.vars = {**(session.vars or {}), "arm_cookie": cookie}
        return None

    def on_response_head(self, session: Session, head: ResponseHead, from_server: bool) -> None:
        if from_server and session.vars is not None:
            cookie = session.vars.get("arm_cookie")
            if cookie is not None:
                session.add_response_field(b"set-cookie", cookie)

    def on_log(self, session: Session) -> None:
        if session.pool is not None:  # an arm was picked
            self.split.observe(session.pool, session.status, session.started)


def build(ctx: BuildContext) -> Filter | None:
    route = ctx.route
    if route is None or route.pool is not None:
        return None
    return CanarySplit(ctx.splits[route.name])

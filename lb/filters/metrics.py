"""Counting every request (lb_requests_total, lb_request_duration_seconds and
lb_upstream_requests_total): in the log phase, so whatever ended a request it is counted once."""

from __future__ import annotations

import time
from typing import Final

from lb.filters.context import BuildContext, Services
from lb.proxy.http.pipeline import Filter
from lb.proxy.http.session import Session

# A Final alias: compiled code holds it in a C static, not a module-attribute lookup per call.
perf_counter: Final = time.perf_counter


class CountRequests(Filter):
    name = "metrics"

    def __init__(self, services: Services, route: str) -> None:
        # The process's one RequestMetrics, never replaced: kept here, a compiled object,
        # rather than read off the plain-Python Proxy by name per request.
        self.metrics = services.metrics
        self.route = route

    def on_log(self, session: Session) -> None:
        self.metrics.observe(
            session.listener,
            self.route,
            session.pool or "-",
            session.server,
            session.status,
            (session.ended or perf_counter()) - session.started,
        )


def build(ctx: BuildContext) -> Filter | None:
    return CountRequests(ctx.services, ctx.route.name if ctx.route is not None else "-")

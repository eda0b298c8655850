"""The access log's record of each request, written in the log phase (the writer, buffered and
reopened on SIGHUP, is `lb.access_log`). Not in the chain at all when the log is off."""

from __future__ import annotations

import time
from typing import Any

from lb.filters.context import BuildContext, Services
from lb.proxy.http.pipeline import Filter
from lb.proxy.http.session import Session


class LogRequests(Filter):
    name = "access_log"

    def __init__(self, services: Services, route: str) -> None:
        self.services = services
        self.route = route

    def on_log(self, session: Session) -> None:
        writer = self.services.access_log  # read per request: SIGHUP swaps it
        if not writer.enabled:
            return
        head = session.head
        record: dict[str, Any] = {
            "time": round(time.time(), 3),
            "client": session.client_ip,
            "listener": session.listener,
            "request_id": session.request_id.decode("latin-1"),
            "method": head.method if head is not None else "-",
            "path": head.path if head is not None else "-",
            "host": head.host if head is not None else "-",
            "route": self.route,
            "pool": session.pool or "-",
            "server": session.server or "-",
            "status": session.status,
            "bytes": session.bytes_out,
            "duration_ms": round((time.perf_counter() - session.started) * 1000, 3),
        }
        if session.detail:
            record["error"] = session.detail
        writer.log(record)


def build(ctx: BuildContext) -> Filter | None:
    if not ctx.config.access_log.enabled:
        return None
    return LogRequests(ctx.services, ctx.route.name if ctx.route is not None else "-")

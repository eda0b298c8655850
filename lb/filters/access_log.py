"""The access log's line for each request, written in the log phase (the writer, buffered and
reopened on SIGHUP, and the escaping are in `lb.access_log`). Not in the chain at all when the
log is off.

The line is one %-format of a template built here once per (listener, route), with the
listener and route names already in it: per request, only the values that change are fetched,
and only those a client can choose are escaped. The target is logged as parsed for routing
(`head.path`, `head.host`: worked out once per request, and already so when a route matched on
them); a combined line has the raw request target, as NCSA's `%r` does.
"""

from __future__ import annotations

from time import perf_counter
from time import time as now

from lb.access_log import AccessLog, NcsaClock, json_quote, logfmt_quote, ncsa_escape
from lb.filters.context import BuildContext, Services
from lb.proxy.http.pipeline import Filter
from lb.proxy.http.session import Session

# The fields of a json or text line, in order. After `route`, only what the session decides.
FIELDS = (
    "time",
    "client",
    "listener",
    "request_id",
    "method",
    "path",
    "host",
    "route",
    "pool",
    "server",
    "status",
    "bytes",
    "duration_ms",
)


# NCSA combined: client, identd and user (none), [time], "request line", status, body bytes,
# "Referer", "User-Agent".
COMBINED = '%s - - [%s] "%s" %d %d "%s" "%s"'


def _json_template(listener: str, route: str, error: bool) -> str:
    listener, route = (json_quote(n).replace("%", "%%") for n in (listener, route))
    return (
        '{"time":%.3f,"client":"%s","listener":' + listener + ',"request_id":%s,'
        '"method":"%s","path":%s,"host":%s,"route":' + route + ',"pool":%s,"server":%s,'
        '"status":%d,"bytes":%d,"duration_ms":%.3f' + (',"error":%s}' if error else "}")
    )


def _text_template(listener: str, route: str, error: bool) -> str:
    listener, route = (logfmt_quote(n).replace("%", "%%") for n in (listener, route))
    return (
        "time=%.3f client=%s listener=" + listener + " request_id=%s method=%s path=%s host=%s"
        " route="
        + route
        + " pool=%s server=%s status=%d bytes=%d duration_ms=%.3f"
        + (" error=%s" if error else "")
    )


class LogRequests(Filter):
    """A json (or text) line: `time`, `client`, `listener`, `request_id`, `method`, `path`,
    `host`, `route`, `pool`, `server`, `status`, `bytes` (response body bytes sent),
    `duration_ms`, and `error` when lb answered itself."""

    name = "access_log"

    def __init__(self, services: Services, listener: str, route: str, fmt: str = "json") -> None:
        self.services = services
        self.listener = listener
        self.route = route
        template = _text_template if fmt == "text" else _json_template
        self._ok = template(listener, route, False)
        self._error = template(listener, route, True)
        self._quote = logfmt_quote if fmt == "text" else json_quote

    def on_log(self, session: Session) -> None:
        writer = self.services.access_log  # read per request: SIGHUP swaps it
        if not writer.enabled:
            return
        head = session.head
        if head is None:
            self._log_refused(writer, session)
            return
        q = self._quote
        values = (
            now(),
            session.client_ip,
            q(session.request_id.decode("latin-1")),  # the client's X-Request-ID, if it sent one
            head.method,
            q(head.path),
            q(head.host),
            q(session.pool or "-"),
            q(session.server or "-"),
            session.status,
            session.bytes_out,
            (perf_counter() - session.started) * 1000,
        )
        detail = session.detail
        writer.add(self._error % (*values, q(detail)) if detail else self._ok % values)

    def _log_refused(self, writer: AccessLog, session: Session) -> None:
        """A byte stream refused before any head: the fields there are, as a record."""
        record: dict[str, object] = {
            "time": round(now(), 3),
            "client": session.client_ip,
            "listener": self.listener,
            "request_id": session.request_id.decode("latin-1"),
            "method": "-",
            "path": "-",
            "host": "-",
            "route": self.route,
            "pool": session.pool or "-",
            "server": session.server or "-",
            "status": session.status,
            "bytes": session.bytes_out,
            "duration_ms": round((perf_counter() - session.started) * 1000, 3),
        }
        if session.detail:
            record["error"] = session.detail
        writer.log(record)


class LogCombined(Filter):
    """An NCSA combined line, as Apache and nginx write it:

        127.0.0.1 - - [26/Nov/2026:15:00:00 +0000] "GET /x?q=1 HTTP/1.1" 200 13 "-" "curl/8.0"

    client, (no identd, no user), time, request line as received, status, response body bytes,
    Referer, User-Agent; bytes a client chose go in as \\xHH when not printable ASCII, and so do
    quotes and backslashes."""

    name = "access_log"

    def __init__(self, services: Services) -> None:
        self.services = services
        self._clock = NcsaClock()

    def on_log(self, session: Session) -> None:
        writer = self.services.access_log
        if not writer.enabled:
            return
        head = session.head
        if head is None:
            request = "-"
            referer = agent = None
        else:
            request = f"{head.method} {ncsa_escape(head.target)} HTTP/{head.version}"
            index = head.index
            referer = index.get(b"referer")
            agent = index.get(b"user-agent")
        writer.add(
            COMBINED
            % (
                session.client_ip,
                self._clock.now(),
                request,
                session.status,
                session.bytes_out,
                "-" if referer is None else ncsa_escape(referer),
                "-" if agent is None else ncsa_escape(agent),
            )
        )


def build(ctx: BuildContext) -> Filter | None:
    log = ctx.config.access_log
    if not log.enabled:
        return None
    if log.format == "combined":
        return LogCombined(ctx.services)
    route = ctx.route.name if ctx.route is not None else "-"
    return LogRequests(ctx.services, ctx.listener.name, route, log.format)

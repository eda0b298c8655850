"""The access log's line for each request, written in the log phase (the writer, buffered and
reopened on SIGHUP, and the escaping are in `lb.access_log`). Not in the chain at all when the
log is off.

A line is built from fixed pieces made here once per (listener, route), with the listener and
route names already in them: per request, only the values that change are fetched, only those
a client can choose are escaped, and numbers are formatted from integers. The target is logged
as parsed for routing (`head.path`, `head.host`: worked out once per request, and already so
when a route matched on them); a combined line has the raw request target, as NCSA's `%r` does.

A json or text line is not formatted when its request ends: the log phase keeps the session
and the time it ended (`session.ended`, and the wall clock's), and the lines of MAX_DEFERRED
requests are formatted together (`AccessLog.format_deferred`). At the end of each request
the formatting code ran cold, after all the rest a request runs, and cost several times what
it costs in a batch (a new connection per request: 55 -> 50 µs of CPU per request).
"""

from __future__ import annotations

import logging
import time
from typing import Final, cast

from lb.access_log import (
    MAX_DEFERRED,
    AccessLog,
    NcsaClock,
    json_quote,
    logfmt_quote,
    ncsa_escape,
)
from lb.core.http import remember
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


# Milliseconds as the three digits after the point: a number is formatted from integers (no
# float formatting, the costliest part of a line), so a time reads 1764860400.123.
_MILLIS: Final = tuple(f"{n:03d}" for n in range(1000))

# A line is its values between fixed pieces ("glue"), built once per (listener, route) with the
# listener and route names already in them; per request, one string is built from the pieces.
Glue = tuple[str, str, str, str, str, str, str, str, str, str, str]


# What json writes between quotes itself: values lb makes (an IP address, a method token).
_JSON_BARE: Final = frozenset({"client", "method"})

# Status codes as text, by number: an index, not an int formatted per line.
_CODES: Final = tuple(str(n) for n in range(1000))

# Quoted paths by request target, one memo per format, shared by its filters: most requests
# are for a few hot URLs, whose path is then decoded, checked and quoted once, not per line
# (1.3k instructions of a 6.8k line). Kept by lb.core.http.remember: short targets only, and
# the memo starts again when full, so a crawl over many URLs costs a lookup more per line.
_PATHS: Final[dict[str, dict[bytes, str]]] = {"json": {}, "text": {}}
_MAX_PATH_TARGET: Final = 256
# The memo of pool, server and status glue (LogRequests._upstream) starts again past this
# many pools, or servers of a pool.
_MAX_UPSTREAMS: Final = 512


log = logging.getLogger(__name__)

# Final aliases: compiled code holds them in C statics, not a module-dict lookup per call.
now: Final = time.time
perf_counter: Final = time.perf_counter
_MAX_DEFERRED: Final = MAX_DEFERRED


def _glue(fmt: str, listener: str, route: str) -> Glue:
    """The pieces before each value of `FIELDS` but the listener and route, which are put in
    them already quoted: `{"time":`, `,"client":"`, ... for json; `time=`, ` client=`, ... for
    text (logfmt)."""
    text = fmt == "text"
    names = {"listener": listener, "route": route}
    pieces: list[str] = []
    piece = "" if text else "{"
    for i, field in enumerate(FIELDS):
        if i:
            piece += " " if text else ","
        piece += f"{field}=" if text else f'"{field}":'
        if field in names:
            piece += logfmt_quote(names[field]) if text else json_quote(names[field])
            continue
        bare = not text and field in _JSON_BARE
        pieces.append(piece + '"' if bare else piece)
        piece = '"' if bare else ""
    assert len(pieces) == 11
    return cast(Glue, tuple(pieces))


# A request whose line is formatted later: (its filter, its session, time.time() when it
# ended; perf_counter()'s reading then is the session's `ended`).
Deferred = tuple["LogRequests", Session, float]


class LogRequests(Filter):
    """A json (or text) line: `time`, `client`, `listener`, `request_id`, `method`, `path`,
    `host`, `route`, `pool`, `server`, `status`, `bytes` (response body bytes sent),
    `duration_ms`, and `error` when lb answered itself."""

    name = "access_log"

    def __init__(self, services: Services, listener: str, route: str, fmt: str = "json") -> None:
        self.services = services
        self.listener = listener
        self.route = route
        text = fmt == "text"
        self._glue = _glue(fmt, listener, route)
        self._error = " error=" if text else ',"error":'
        self._end = "" if text else "}"  # after `error`, when there is one
        self._quote = logfmt_quote if text else json_quote
        self._mark = "" if text else '"'  # around a value that needs no escaping
        self._millis = -1  # the last line's time in ms, and its time field
        self._time = ""
        # Pool, server and host names, quoted: a few per route, so each is quoted once.
        self._quoted: dict[str, str] = {}
        self._paths = _PATHS["text" if text else "json"]
        # pool -> server -> the line from the pool's glue to the status's: both come from a
        # few names per route, so the five pieces between are joined once per pair (by
        # name, not a tuple: a tuple's hash and compare cost more than a second lookup).
        self._upstreams: dict[str, dict[str, str]] = {}

    def on_log(self, session: Session) -> None:
        writer = self.services.access_log  # read per request: SIGHUP swaps it
        if not writer.enabled:
            return
        if session.head is None:
            self._log_refused(writer, session)
            return
        # The line is formatted later, with others (AccessLog.format_deferred): only the
        # times are taken now. Nothing changes a session once its log phase has run.
        if not session.ended:  # (a session logged outside an exchange)
            session.ended = perf_counter()
        deferred = writer.deferred
        deferred.append((self, session, now()))
        if len(deferred) >= _MAX_DEFERRED:
            writer.format_deferred()

    def format_lines(self, requests: list[Deferred], lines: list[str]) -> None:
        """The lines of deferred requests, each by the filter that deferred it. A line that
        cannot be formatted is lost alone, named in the log, not with its batch (nor does it
        stop the periodic flush that may be formatting it)."""
        for request in requests:
            try:
                lines.append(request[0].line(request[1], request[2]))
            except Exception:
                log.exception("access log: no line for %r", request[1])

    def line(self, session: Session, wall: float) -> str:
        """The line of a request that ended at `wall` (time.time) and `session.ended`."""
        head = session.head
        assert head is not None  # refused byte streams are logged at once
        q = self._quote
        t, c, rid, m, path_glue, host, _, _, _, sent, took = self._glue
        millis = int(wall * 1000)
        if millis != self._millis:  # many lines share a millisecond under load
            self._millis = millis
            self._time = f"{t}{millis // 1000}.{_MILLIS[millis % 1000]}{c}"
        micros = int((session.ended - session.started) * 1_000_000)
        detail = session.detail
        request_id = session.request_id.decode("latin-1")
        # lb's own ids hold nothing to escape (only json's quotes around them); a client's,
        # visible ASCII, may hold a quote.
        if session.own_request_id:
            mark = self._mark
        else:
            request_id, mark = q(request_id), ""
        quoted_path = self._paths.get(head.target)
        if quoted_path is None:
            quoted_path = remember(self._paths, head.target, q(head.path), _MAX_PATH_TARGET)
        pool = session.pool or "-"
        server = session.server or "-"
        servers = self._upstreams.get(pool)
        upstream = servers.get(server) if servers is not None else None
        if upstream is None:
            upstream = self._upstream(pool, server)
        code = session.status
        return (
            f"{self._time}{session.client_ip}"
            f"{rid}{mark}{request_id}{mark}{m}{head.method}"
            f"{path_glue}{quoted_path}{host}{self._named(head.host)}"
            f"{upstream}{_CODES[code] if 0 <= code < 1000 else code}"
            f"{sent}{session.bytes_out}"
            f"{took}{micros // 1000}.{_MILLIS[micros % 1000]}"
            f"{f'{self._error}{q(detail)}' if detail else ''}{self._end}"
        )

    def _upstream(self, pool: str, server: str) -> str:
        """The pool and server fields and the status's name, for `_upstreams`."""
        _, _, _, _, _, _, pool_glue, server_glue, status_glue, _, _ = self._glue
        joined = f"{pool_glue}{self._named(pool)}{server_glue}{self._named(server)}{status_glue}"
        servers = self._upstreams.get(pool)
        if servers is None or len(servers) >= _MAX_UPSTREAMS:
            if len(self._upstreams) >= _MAX_UPSTREAMS:
                self._upstreams.clear()
            servers = self._upstreams[pool] = {}
        servers[server] = joined
        return joined

    def _named(self, name: str) -> str:
        """A pool, server or host name, quoted: from a small set (config, discovered
        addresses, the names a site serves), so kept once quoted; the memo is dropped if it
        ever grows past a few hundred."""
        quoted = self._quoted.get(name)
        if quoted is None:
            if len(self._quoted) >= 512:
                self._quoted.clear()
            quoted = self._quoted[name] = self._quote(name)
        return quoted

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

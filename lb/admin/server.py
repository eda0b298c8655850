"""The admin listener, served by the supervisor (DESIGN.md "Admin listener").

It is not on the request path, so it favours simplicity: asyncio streams and h11, one request
at a time per connection. Mutating endpoints require `Authorization: Bearer <token>` when
`admin.token` or the LB_ADMIN_TOKEN environment variable is set.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import h11

from lb.admin.status import admin_token, status_document, status_page
from lb.admin.window import CounterWindow
from lb.config.base import split_address

if TYPE_CHECKING:
    from lb.admin.target import Supervised

log = logging.getLogger("lb.admin")

Response = tuple[int, str, bytes]


class AdminServer:
    def __init__(self, supervisor: Supervised) -> None:
        self.supervisor = supervisor
        self._server: asyncio.AbstractServer | None = None
        self.window = CounterWindow()  # recent req/s and latency for /api/v1/status

    async def start(self, bind: str) -> None:
        host, port = split_address(bind)
        self._server = await asyncio.start_server(self._serve, host, port)
        log.info("admin listening on %s", bind)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                body = b""
                while True:
                    part = await _next_event(conn, reader)
                    if isinstance(part, h11.Data):
                        body += part.data
                        if len(body) > 1 << 20:
                            raise h11.RemoteProtocolError("body too large")
                    else:
                        break
                handled = self.handle(
                    event.method.decode(),
                    event.target.decode("latin-1"),
                    dict(event.headers),
                    body,
                )
                if inspect.isawaitable(handled):  # (those that ask a store: queues)
                    handled = await handled
                status, ctype, payload = handled
                headers = [("content-type", ctype), ("content-length", str(len(payload)))]
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
                writer.write(conn.send(h11.Data(data=payload)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # a client that breaks the protocol or goes quiet: just close
        finally:
            writer.close()

    def handle(
        self, method: str, target: str, headers: dict[bytes, bytes], body: bytes
    ) -> Response | Awaitable[Response]:
        path = target.split("?", 1)[0]
        if method == "GET":
            if path == "/healthz":
                return 200, "text/plain", b"ok\n"
            if path == "/metrics":
                from lb.admin.metrics import render_metrics

                ctype, payload = render_metrics()
                return 200, ctype, payload
            if path == "/api/v1/status":
                return _json(200, status_document(self.supervisor, self.window))
            if path == "/api/v1/queues":
                return self._queues()
            if path == "/status":
                return 200, "text/html; charset=utf-8", status_page()
            return _json(404, {"error": f"no admin endpoint {path}"})
        if method == "POST":
            if not self._authorized(headers):
                return _json(401, {"error": "missing or wrong bearer token"})
            if path == "/api/v1/reload":
                problems = self.supervisor.reload()
                if problems:
                    return _json(422, {"reloaded": False, "problems": problems})
                return _json(200, {"reloaded": True})
            if path.startswith("/api/v1/routes/") and path.endswith("/rearm"):
                route = unquote(path[len("/api/v1/routes/") : -len("/rearm")])
                problem = self.supervisor.rearm(route)
                if problem is not None:
                    return _json(404, {"rearmed": False, "error": problem})
                return _json(200, {"rearmed": True, "route": route})
            if path.startswith("/api/v1/pools/") and path.endswith(("/drain", "/enable")):
                return self._drain(path)
            if path.startswith("/api/v1/queues/") and path.endswith("/dead/replay"):
                return self._replay(unquote(path[len("/api/v1/queues/") : -len("/dead/replay")]))
            if path == "/api/v1/cache/purge":
                return self._purge(body)
            return _json(404, {"error": f"no admin endpoint {path}"})
        return _json(405, {"error": f"method {method} not allowed"})

    def _drain(self, path: str) -> Response:
        """POST /api/v1/pools/{pool}/servers/{address}/drain (or /enable); the address as
        configured, its colon as is or %3A."""
        rest, _, action = path[len("/api/v1/pools/") :].rpartition("/")
        pool, sep, address = rest.partition("/servers/")
        if not sep or not pool or not address:
            return _json(404, {"error": f"no admin endpoint {path}"})
        pool, address = unquote(pool), unquote(address)
        drained = action == "drain"
        problem = self.supervisor.drain(pool, address, drained)
        if problem is not None:
            return _json(404, {"error": problem})
        return _json(200, {"pool": pool, "server": address, "drained": drained})

    async def _queues(self) -> Response:
        from lb.admin.queues import queues_document

        status, document = await queues_document(self.supervisor)
        return _json(status, document)

    async def _replay(self, queue: str) -> Response:
        from lb.admin.queues import replay

        status, document = await replay(self.supervisor, queue)
        return _json(status, document)

    async def _purge(self, body: bytes) -> Response:
        from lb.cache.purge import PurgeRequestError, parse_purge
        from lb.stores import StoreUnavailable

        try:
            kind, value = parse_purge(body)
        except PurgeRequestError as err:
            log.info("cache purge refused: %s", err)
            return _json(400, {"error": str(err)})
        try:
            count, missing = await self.supervisor.purge_cache(kind, value)
        except StoreUnavailable as err:
            log.warning("cache purge %s %r not done: redis is unavailable: %s", kind, value, err)
            return _json(503, {"error": f"redis is unavailable, nothing purged: {err}"})
        document: dict[str, Any] = {"purged": count, kind: value if kind != "all" else True}
        if missing:
            document["workers_not_answering"] = missing
        return _json(200, document)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        token = admin_token(self.supervisor)
        if not token:
            return True
        given = headers.get(b"authorization", b"").decode("latin-1")
        return hmac.compare_digest(given, f"Bearer {token}")


def _json(status: int, document: Any) -> Response:
    return status, "application/json", (json.dumps(document, indent=2) + "\n").encode()


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(65536), timeout=30)
            conn.receive_data(data)
            continue
        return event

"""Real processes and sockets for the resilience tests: origins on a chosen address (so two of
them can share a port on 127.0.0.1 and 127.0.0.2), an Upgrade tunnel client, and admin calls.

Everything waits with a deadline; processes are stopped by PID (tests.integration.helpers)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.integration.helpers import free_port


class Origin:
    """HTTP/1.1 origin answering `origin NAME PATH`; `GET /slow?s=X` answers after X seconds;
    a request with `Upgrade:` is answered 101, then every byte is echoed back."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with origin.lock:
                    origin.hits[self.path] += 1
                if self.headers.get("upgrade"):
                    self._tunnel()
                    return
                if self.path.startswith("/slow"):
                    time.sleep(float(self.path.partition("s=")[2] or 1))
                body = f"origin {origin.name} {self.path}\n".encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _tunnel(self) -> None:
                self.send_response(101)
                self.send_header("connection", "upgrade")
                self.send_header("upgrade", self.headers["upgrade"])
                self.end_headers()
                self.wfile.flush()
                sock = self.connection
                sock.settimeout(30)
                try:
                    while data := sock.recv(65536):
                        sock.sendall(data)
                except OSError:
                    pass
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.address = f"{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.hits.values())

    def __enter__(self) -> Origin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def shared_port() -> int:
    """A port free on both 127.0.0.1 and 127.0.0.2."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.2", port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free on both loopback addresses")


class Tunnel:
    """A WebSocket-like Upgrade through lb: 101, then bytes echoed by the origin."""

    def __init__(self, port: int, path: str = "/ws") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: lb.test\r\nConnection: Upgrade\r\n"
            "Upgrade: websocket\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, f"closed before the 101: {head!r}"
            head += chunk
        head, _, self.extra = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def echo(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        got = self.extra
        self.extra = b""
        while len(got) < len(data):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got

    def close(self) -> None:
        self.sock.close()


def admin_post(
    port: int, path: str, token: str | None = None, body: bytes = b""
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    """One request on a kept-alive connection."""
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()

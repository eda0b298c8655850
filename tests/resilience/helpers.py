"""Real processes and sockets for the resilience tests: origins on a chosen address (so two of
them can share a port on 127.0.0.1 and 127.0.0.2; `Origin` is tests.integration.helpers'), an
Upgrade tunnel client, and admin calls.

Everything waits with a deadline; processes are stopped by PID (tests.integration.helpers)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from tests.integration.helpers import Origin, free_port

__all__ = ["Origin", "Tunnel", "admin_post", "get", "shared_port"]


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

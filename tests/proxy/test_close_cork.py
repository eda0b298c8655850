"""The last response of a closing connection is corked, so its last bytes and the FIN leave
the kernel in one segment (lb.proxy.http.client._cork_socket)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from lb.proxy.http.client import _cork_socket


class Transport(asyncio.BaseTransport):
    def __init__(self, sock: socket.socket | None) -> None:
        super().__init__()
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


def test_the_socket_is_corked() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname()[:2])
        accepted, _ = server.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
            _cork_socket(Transport(accepted))
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
            # What was corked still arrives, with the FIN, once the socket closes.
            accepted.sendall(b"last bytes")
            accepted.close()
            client.settimeout(5)
            got = b""
            while chunk := client.recv(100):
                got += chunk
            assert got == b"last bytes"


def test_no_socket_or_a_closed_one_is_no_error() -> None:
    _cork_socket(Transport(None))
    sock = socket.socket()
    sock.close()
    _cork_socket(Transport(sock))  # setsockopt on a closed socket: OSError, suppressed

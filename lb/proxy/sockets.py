"""Listening sockets, bound by each worker process itself (SO_REUSEPORT shares the port)."""

from __future__ import annotations

import socket

from lb.config.base import split_address


def listening_socket(bind: str, reuse_port: bool, kind: int = socket.SOCK_STREAM) -> socket.socket:
    host, port = split_address(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(4096)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock

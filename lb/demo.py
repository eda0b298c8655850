"""`lb demo`: the shipped config with two demo backends, for a first look in a minute.

Each backend answers every request with a line naming itself, so balancing is visible with
`curl` in a loop; /reports/... takes two seconds (the shipped config offloads it: 202 and a
job URL). Both run in this process's children; Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import socket
import sys

DEMO_PORTS = (9001, 9002)
SLOW_SECONDS = 2.0  # /reports/...: a slow endpoint, for queue offload


class _DemoBackend(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            body = (
                json.dumps(
                    {"backend": self.name, "request": lines[0], "headers": headers}, indent=1
                ).encode()
                + b"\n"
            )
            response = (
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            target = [*lines[0].split(" "), "", ""][1]
            if target.startswith("/reports/"):
                asyncio.get_running_loop().call_later(SLOW_SECONDS, self._write, response)
            else:
                self._write(response)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def serve_backend(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _DemoBackend(f"demo-{port}"), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole process group
        asyncio.run(main())


def port_taken(port: int) -> bool:
    """Something holds `port` on 127.0.0.1 (a bind with SO_REUSEADDR fails)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def run_demo(config_path: str, workers: int) -> int:
    taken = [port for port in DEMO_PORTS if port_taken(port)]
    if taken:
        print(
            f"lb demo: port {', '.join(map(str, taken))} on 127.0.0.1 is in use; the demo "
            f"backends need {' and '.join(map(str, DEMO_PORTS))}",
            file=sys.stderr,
        )
        return 1
    backends = [
        multiprocessing.Process(target=serve_backend, args=(port,), daemon=True)
        for port in DEMO_PORTS
    ]
    for proc in backends:
        proc.start()
    print(
        "demo backends on 127.0.0.1:9001 and :9002; lb on http://127.0.0.1:8080 "
        "(admin http://127.0.0.1:9901/metrics)\n"
        "try: for i in 1 2 3 4; do curl -s http://127.0.0.1:8080/ | grep backend; done\n"
        "and: curl -si -X POST http://127.0.0.1:8080/reports/monthly  (202: GET its Location)",
        file=sys.stderr,
    )
    from lb.supervisor import run

    try:
        return run(config_path, workers)
    finally:
        for proc in backends:
            proc.terminate()
            proc.join(timeout=5)

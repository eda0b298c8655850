"""`lb demo`: the shipped config with two demo backends, for a first look in a minute.

Each backend answers every request with a line naming itself, so balancing is visible with
`curl` in a loop; /reports/... takes two seconds (the shipped config offloads it: 202 and a
job URL). Both run in this process's children; Ctrl-C stops everything.

`python -m lb.demo --backends-only [--host 0.0.0.0] [--port 9001 ...]` runs only the demo
backends (no lb), e.g. one per container in deploy/compose/docker-compose.yml.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import signal
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


def serve_backend(port: int, host: str = "127.0.0.1") -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _DemoBackend(f"demo-{port}"), host, port)
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


def run_backends(host: str, ports: list[int]) -> int:
    """The demo backends alone, in the foreground: one on each port (in this process when
    there is one port, else one child process each), until SIGINT or SIGTERM."""
    # SIGTERM (`docker stop`; PID 1 ignores it without a handler) stops them as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"demo backends on {host}:{', '.join(map(str, ports))}", file=sys.stderr)
    if len(ports) == 1:
        serve_backend(ports[0], host)
        return 0
    backends = [
        multiprocessing.Process(target=serve_backend, args=(port, host), daemon=True)
        for port in ports
    ]
    for proc in backends:
        proc.start()
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # after the forks: children keep theirs
    try:
        while all(proc.is_alive() for proc in backends):
            if signal.sigtimedwait(stops, 1.0) is not None:
                break
    finally:
        for proc in backends:
            proc.terminate()
        for proc in backends:
            proc.join(timeout=5)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lb.demo", description="the demo backends of `lb demo`, without lb"
    )
    parser.add_argument(
        "--backends-only",
        action="store_true",
        required=True,
        help="run only the demo backends (`lb demo` runs them with lb)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [%(default)s]")
    parser.add_argument(
        "--port",
        type=int,
        action="append",
        dest="ports",
        help=f"a port to serve a backend on; repeatable [{' and '.join(map(str, DEMO_PORTS))}]",
    )
    args = parser.parse_args(argv)
    return run_backends(args.host, args.ports or list(DEMO_PORTS))


if __name__ == "__main__":
    sys.exit(main())

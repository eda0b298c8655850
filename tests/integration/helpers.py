"""Real processes for the integration tests: `python -m lb run` on free ports, small origin
servers in threads, and plain HTTP with bounded waits.

Every wait here has a deadline, and every process started is stopped by its PID in a
`finally` (see `LbProcess.stop`), so a failing test leaves nothing listening.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody holds right now (bind port 0, read it, close)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RefusedPort:
    """A port on 127.0.0.1 where every connect is refused until `release()`: bound, never
    listening, so no other socket of the run is given it meanwhile. (A port free_port() found
    is free only then: the next bind to port 0, another origin's, may be handed it.)"""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])

    def release(self) -> None:
        """For a server of the test's own to listen there from now on."""
        self._sock.close()


# Origins ------------------------------------------------------------------------------------


class Origin:
    """An HTTP/1.1 server in a thread that answers `origin <name> <path>`; counts requests.

    GET /slow?s=1.5 answers after 1.5 seconds; a request with `Upgrade:` is answered 101, then
    every byte is echoed back. `host` and `port` choose where it listens (default: a free port
    on 127.0.0.1).
    """

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
                    # The scenario: a server slow to answer (a request in flight).
                    time.sleep(float(self.path.partition("s=")[2] or 1))
                body = f"origin {origin.name} {self.path}\n".encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

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


# HTTP ---------------------------------------------------------------------------------------


def request(
    port: int,
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def get_json(port: int, path: str) -> Any:
    status, _, body = request(port, path)
    assert status == 200, (status, body)
    return json.loads(body)


def metric_total(text: str, name: str) -> float:
    """The sum of every sample of `name` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# lb -----------------------------------------------------------------------------------------


def lb_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("LB_ADMIN_TOKEN", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_lb(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """`python -m lb ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "lb", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=lb_env(),
        cwd=REPO,
    )


def write_config(
    path: Path,
    servers: list[str],
    *,
    port: int,
    admin_port: int,
    extra_routes: str = "",
    extra_pools: str = "",
    extra: str = "",
    grace: str = "5s",
) -> Path:
    server_list = ", ".join(f'{{address: "{s}"}}' for s in servers)
    path.write_text(
        f"""version: 1
defaults: {{shutdown_grace: {grace}}}
listeners:
  web: {{bind: "127.0.0.1:{port}", mode: http}}
routes:
{extra_routes}  - {{name: default, match: {{}}, pool: app}}
pools:
  app:
    balance: round_robin
    servers: [{server_list}]
{extra_pools}admin: {{bind: "127.0.0.1:{admin_port}"}}
{extra}"""
    )
    return path


class LbProcess:
    """`python -m lb run -c CONFIG --workers N`, its output in a file, stopped by PID."""

    def __init__(self, config: Path, port: int, admin_port: int, workers: int = 2) -> None:
        self.config = config
        self.port = port
        self.admin_port = admin_port
        self.workers = workers
        self.log_path = config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> LbProcess:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lb",
                    "run",
                    "-c",
                    str(self.config),
                    "--workers",
                    str(self.workers),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=lb_env(),
                cwd=self.config.parent,
            )
        wait_for(self.ready, timeout, what=lambda: f"lb ready; log:\n{self.log()}")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"lb exited with {self.proc.returncode}:\n{self.log()}")
        workers = self.status()["workers"]
        return len(workers) == self.workers and all(w["alive"] and w["ready"] for w in workers)

    def status(self) -> Any:
        return get_json(self.admin_port, "/api/v1/status")

    def metrics(self) -> str:
        status, _, body = request(self.admin_port, "/metrics")
        assert status == 200
        return body.decode()

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.status()["workers"]]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL (the supervisor and any worker left) if it does not exit."""
        if self.proc is None:
            return
        pids: list[int] = []
        with contextlib.suppress(Exception):
            pids = self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in pids:  # workers exit with the supervisor; make sure of it
            with contextlib.suppress(OSError):
                if b"lb.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> LbProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def lb_with_origins(
    tmp_path: Path, names: tuple[str, ...] = ("a", "b"), workers: int = 2, **config: Any
) -> Iterator[tuple[LbProcess, list[Origin]]]:
    with contextlib.ExitStack() as stack:
        origins = [stack.enter_context(Origin(name)) for name in names]
        port, admin_port = free_port(), free_port()
        path = write_config(
            tmp_path / "lb.yaml",
            [o.address for o in origins],
            port=port,
            admin_port=admin_port,
            **config,
        )
        lb = stack.enter_context(LbProcess(path, port, admin_port, workers))
        yield lb, origins

"""Health checks on real sockets: active (tcp, http) and passive, and the shared verdicts.

Each test runs an in-process Proxy (which probes for itself) against small HTTP backends
that can be killed and restarted on the same port; intervals of 100ms keep tests short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from lb.config import load_config_text
from lb.metrics import SERVER_UP
from lb.proxy.health.channel import HEALTH_DIR_ENV, HealthPublisher, SharedHealth
from lb.proxy.proxy import Proxy
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(20)


class Backend:
    """An HTTP/1.1 server answering `status` with its name as the body, and `health_status`
    on /healthz; counts both kinds of request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = 200
        self.health_status = 200
        self.hits = 0  # requests other than /healthz
        self.checks = 0  # GET /healthz
        self.host_headers: list[str] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def kill(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(0)  # one turn of the loop: the aborted connections end

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                if path == "/healthz":
                    self.checks += 1
                    for line in lines[1:]:
                        if line.lower().startswith("host:"):
                            self.host_headers.append(line[5:].strip())
                    status = self.health_status
                else:
                    self.hits += 1
                    status = self.status
                body = self.name.encode()
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def backends() -> AsyncIterator[Callable[[str], Any]]:
    started: list[Backend] = []

    async def start(name: str) -> Backend:
        backend = Backend(name)
        await backend.start()
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.kill()


@pytest.fixture
def workers(start_worker: Callable[..., Any]) -> Callable[[str], Any]:
    async def start(text: str) -> Proxy:
        return await start_worker(load_config_text(text))

    return start


def config(*servers: Backend, pool: str = "", health: str = "", passive: str = "") -> str:
    lines = [
        "version: 1",
        "access_log: {enabled: false}",
        "listeners: {web: {bind: '127.0.0.1:0'}}",
        "routes: [{pool: app}]",
        "pools:",
        "  app:",
        "    servers:",
        *[f"      - {{address: '{s.address}'}}" for s in servers],
    ]
    if health:
        lines.append(f"    health_check: {health}")
    if passive:
        lines.append(f"    passive: {passive}")
    return "\n".join(lines) + "\n"


async def get(worker: Proxy, path: str = "/") -> tuple[int, str]:
    """One request on a new connection: (status, body)."""
    reader, writer = await asyncio.open_connection(*worker.addresses["web"])
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n".encode())
        async with asyncio.timeout(2):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ")[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
        return status, body.decode()
    finally:
        writer.close()


def state(worker: Proxy, backend: Backend, pool: str = "app") -> Any:
    return next(s.state for s in worker.runtime.pools[pool].servers if s.address == backend.address)


def gauge(pool: str, backend: Backend) -> float:
    return float(SERVER_UP.labels(pool, backend.address)._value.get())


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


FAST = (
    "{path: /healthz, interval: 100ms, timeout: 100ms, healthy_threshold: 2,"
    " unhealthy_threshold: 3}"
)


# -- active checks ------------------------------------------------------------------------------


async def test_killed_server_goes_down_then_comes_back(
    backends: Any, workers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lb.health")
    a, b = await backends("a"), await backends("b")
    worker = await workers(config(a, b, health=FAST))
    await wait_until(lambda: b.checks >= 2)
    assert state(worker, b).healthy and gauge("app", b) == 1

    await b.kill()
    await wait_until(lambda: not state(worker, b).healthy)
    assert gauge("app", b) == 0
    down = messages(caplog, f"server {b.address} in pool app is DOWN")
    assert down == [f"server {b.address} in pool app is DOWN: connect refused (3 failures)"]

    caplog.clear()
    answers = [await get(worker) for _ in range(8)]
    assert answers == [(200, "a")] * 8
    assert not messages(caplog, "connect to")  # the dead server was not even tried

    await b.start()  # same port
    await wait_until(lambda: state(worker, b).healthy)
    assert gauge("app", b) == 1
    up = messages(caplog, f"server {b.address} in pool app is UP")
    assert up == [f"server {b.address} in pool app is UP: status 200 (2 passes)"]
    answers = [await get(worker) for _ in range(4)]
    assert {body for _, body in answers} == {"a", "b"}
    checks = b.checks
    await wait_until(lambda: b.checks >= checks + 3, what="three more passing checks")
    assert len(messages(caplog, "is UP")) == 1 and not messages(caplog, "is DOWN")


async def test_http_check_expected_status_and_host(backends: Any, workers: Any) -> None:
    a, b = await backends("a"), await backends("b")
    health = (
        "{path: /healthz, expect_status: [200], host: health.test, interval: 100ms,"
        " timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 2}"
    )
    worker = await workers(config(a, b, health=health))
    await wait_until(lambda: b.checks >= 2)
    assert b.host_headers[0] == "health.test"

    b.health_status = 204  # a 2xx, but not the one expected
    await wait_until(lambda: not state(worker, b).healthy)
    hits = b.hits
    answers = [await get(worker) for _ in range(6)]
    assert answers == [(200, "a")] * 6  # b still answers requests, yet gets none
    assert b.hits == hits

    b.health_status = 200
    await wait_until(lambda: state(worker, b).healthy)
    assert {body for _, body in [await get(worker) for _ in range(4)]} == {"a", "b"}


async def test_tcp_check_and_unconfirmed_dead_server(
    backends: Any, workers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lb.health")
    a, dead = await backends("a"), await backends("dead")
    await dead.kill()  # dead from the start: down at its first failed check
    health = "{type: tcp, interval: 100ms, timeout: 100ms}"
    worker = await workers(config(a, dead, health=health))
    await wait_until(lambda: not state(worker, dead).healthy, timeout=0.5)
    assert messages(caplog, "is DOWN") == [
        f"server {dead.address} in pool app is DOWN: connect refused (1 failure)"
    ]
    assert state(worker, a).healthy
    assert a.checks == 0  # a tcp check sends no request


async def test_no_health_check_means_not_checked(backends: Any, workers: Any) -> None:
    a = await backends("a")
    worker = await workers(config(a))
    assert not worker.health.checker.targets  # nothing to probe (a target's first is at once)
    assert await get(worker) == (200, "a")
    assert a.checks == 0 and a.hits == 1


async def test_reload_keeps_verdicts(backends: Any, workers: Any) -> None:
    a, b = await backends("a"), await backends("b")
    worker = await workers(config(a, b, health=FAST))
    await wait_until(lambda: b.checks >= 1)
    await b.kill()
    await wait_until(lambda: not state(worker, b).healthy)
    # Same servers, a slower check: b is still known to be down in the new runtime.
    worker.reload(load_config_text(config(a, b, health=FAST.replace("100ms,", "150ms,", 1))))
    assert not state(worker, b).healthy
    assert [await get(worker) for _ in range(3)] == [(200, "a")] * 3
    # Health checks removed: nothing vouches against b any more.
    worker.reload(load_config_text(config(a, b)))
    assert state(worker, b).healthy


# -- passive checks -----------------------------------------------------------------------------


async def test_passive_ejects_after_5xx_and_readmits_with_growing_time(
    backends: Any, workers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lb.health")
    a, b, c = await backends("a"), await backends("b"), await backends("c")
    b.status = 500
    passive = "{consecutive_failures: 3, base_ejection: 300ms, max_ejected_percent: 50}"
    worker = await workers(config(a, b, c, passive=passive))
    answers = [await get(worker) for _ in range(9)]  # round robin: 3 each
    assert b.hits == 3 and not state(worker, b).healthy
    assert gauge("app", b) == 0
    assert messages(caplog, "ejected for") == [
        f"server {b.address} in pool app ejected for 0.3s: 3 failures in a row (ejection 1)"
    ]
    assert sorted(answers).count((500, "b")) == 3
    assert sorted([await get(worker) for _ in range(6)]) == [(200, "a")] * 3 + [(200, "c")] * 3
    assert b.hits == 3

    await wait_until(lambda: state(worker, b).healthy, timeout=1.0)
    assert messages(caplog, "back from ejection")
    assert gauge("app", b) == 1
    for _ in range(9):
        await get(worker)
    assert b.hits == 6 and not state(worker, b).healthy
    assert messages(caplog, "ejected for")[-1].endswith(
        "ejected for 0.6s: 3 failures in a row (ejection 2)"
    )


async def test_passive_never_ejects_more_than_max_share(
    backends: Any, workers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lb.health")
    a, b = await backends("a"), await backends("b")
    a.status = b.status = 503
    passive = "{consecutive_failures: 2, base_ejection: 5s, max_ejected_percent: 50}"
    worker = await workers(config(a, b, passive=passive))
    for _ in range(10):
        await get(worker)
    healthy = [state(worker, s).healthy for s in (a, b)]
    assert sorted(healthy) == [False, True]  # one of two out, never both
    assert len(messages(caplog, "ejected for")) == 1
    assert len(messages(caplog, "not ejected after")) == 1  # the cap is reported once


async def test_passive_counts_connect_failures(backends: Any, workers: Any) -> None:
    a, b, gone = await backends("a"), await backends("b"), await backends("gone")
    await gone.kill()
    passive = "{consecutive_failures: 2, base_ejection: 5s, max_ejected_percent: 50}"
    worker = await workers(config(a, b, gone, passive=passive))
    answers = [await get(worker) for _ in range(9)]
    assert all(status == 200 for status, _ in answers)  # refused connects are retried
    assert not state(worker, gone).healthy


# -- the verdicts shared across processes -------------------------------------------------------


async def test_workers_read_the_published_verdicts(
    backends: Any, workers: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One prober (the supervisor's HealthPublisher) and two workers reading its file: the
    server is checked once per interval, not once per worker, and both workers agree."""
    a, b = await backends("a"), await backends("b")
    text = config(a, b, health=FAST)
    publisher = HealthPublisher(str(tmp_path))
    publisher.start(load_config_text(text))
    monkeypatch.setenv(HEALTH_DIR_ENV, str(tmp_path))
    try:
        one, two = await workers(text), await workers(text)
        assert isinstance(one.health, SharedHealth)
        loop = asyncio.get_running_loop()
        await wait_until(lambda: b.checks >= 1)
        checks, started = b.checks, loop.time()
        await wait_until(lambda: b.checks >= checks + 5, what="five more checks")
        # One prober starts each check a whole interval (100ms) after the last began: five
        # more take 500ms. A prober per process (three) would make them in about 200ms.
        assert loop.time() - started >= 0.35

        await b.kill()
        await wait_until(lambda: not state(one, b).healthy and not state(two, b).healthy)
        assert publisher.state("app", b.address)["health"] == "down"
        assert [await get(one) for _ in range(3)] == [(200, "a")] * 3

        # A reload of the same layout keeps reading the same file; b stays down.
        one.reload(load_config_text(text))
        assert not state(one, b).healthy

        await b.start()
        await wait_until(lambda: state(one, b).healthy and state(two, b).healthy)
        assert publisher.state("app", b.address) == {"health": "up", "last_check": "status 200"}
        assert publisher.state("nope", b.address) == {"health": "unchecked"}
    finally:
        publisher.stop()
        with contextlib.suppress(Exception):
            monkeypatch.delenv(HEALTH_DIR_ENV)

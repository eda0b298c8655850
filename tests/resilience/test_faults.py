"""Faults with real server processes (killed with SIGKILL, hanging, restarted) under bounded
load loops through an in-process lb worker: retries hide a killed server, a hanging one is
timed out and ejected, a returning one rejoins and ramps up, backups take over, and with every
server down lb answers 503 no_healthy_server."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lb.core.balancer import ServerState
from lb.proxy.proxy import Proxy
from tests.conftest import Message, read_body, read_head, wait_until
from tests.integration.helpers import free_port


@pytest.fixture
def parser_kind() -> str:
    return "httptools"  # faults are about servers, not parsers: one run is enough


class OriginProcess:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, mode: str = "ok") -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.resilience.fault_origin",
            str(self.port),
            self.name,
            mode,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(10):
            assert await self.proc.stdout.readline() == b"ready\n"

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def origins() -> AsyncIterator[Callable[..., Awaitable[list[OriginProcess]]]]:
    started: list[OriginProcess] = []

    async def start(*specs: str) -> list[OriginProcess]:
        """`await origins("a", "b:hang")`: one process each, `NAME[:MODE]`."""
        made = []
        for spec in specs:
            name, _, mode = spec.partition(":")
            origin = OriginProcess(name, free_port())
            started.append(origin)
            await origin.start(mode or "ok")
            made.append(origin)
        return made

    yield start
    for origin in started:
        await origin.kill()


def config(servers: list[dict[str, Any]], **pool: Any) -> dict[str, Any]:
    return {
        "listeners": {"web": {}},
        "defaults": {"timeouts": {"connect": "500ms", "request": "2s"}},
        "routes": [{"name": "default", "match": {}, "pool": "app"}],
        "pools": {"app": {"servers": servers, **pool}},
    }


class Client:
    """A keep-alive client that reconnects when lb closes; `get` -> (status, body, x-lb-error)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, method: str = "GET") -> tuple[int, str, str | None]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(*self.address)
        reader, writer = self.streams
        body = b"x" * 10 if method == "POST" else b""
        writer.write(
            b"%s / HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s"
            % (method.encode(), len(body), body)
        )
        async with asyncio.timeout(5):
            msg: Message | None = await read_head(reader)
            assert msg is not None, "lb closed the connection without answering"
            data = await read_body(reader, msg)
        if "close" in (msg.header("connection") or ""):
            self.close()
        return msg.status, data.decode().strip(), msg.header("x-lb-error")

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].transport.abort()
            self.streams = None


async def load(
    worker: Proxy,
    clients: int,
    each: int,
    method: str = "GET",
    at: Callable[[int], Awaitable[None]] | None = None,
) -> Counter[tuple[int, str]]:
    """`clients` concurrent keep-alive clients, `each` requests each; `at(n)` runs after the
    n-th answer. Counts (status, body or X-LB-Error)."""
    results: Counter[tuple[int, str]] = Counter()
    done = 0

    async def one() -> None:
        nonlocal done
        client = Client(worker.addresses["web"])
        try:
            for _ in range(each):
                status, body, error = await client.get(method)
                results[(status, error or body)] += 1
                done += 1
                if at is not None:
                    await at(done)
        finally:
            client.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return results


def states(worker: Proxy) -> dict[str, ServerState]:
    return {s.address: s.state for s in worker.runtime.pools["app"].servers}


def retries() -> float:
    return REGISTRY.get_sample_value("lb_retries_total", {"pool": "app"}) or 0.0


CHECKED = {
    "health_check": {
        "path": "/",
        "interval": "100ms",
        "timeout": "200ms",
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
    },
    "passive": {"consecutive_failures": 3, "base_ejection": "30s"},
}


async def test_killed_server_under_load_loses_no_idempotent_request(proxy: Any, origins: Any):
    a, b, c = await origins("a", "b", "c")
    worker = await proxy(config([{"address": o.address} for o in (a, b, c)], **CHECKED))
    before = retries()

    async def kill(n: int) -> None:
        if n == 150:
            await b.kill()

    results = await load(worker, clients=6, each=100, at=kill)
    assert sum(results.values()) == 600
    assert {status for status, _ in results} == {200}, results  # retried, never an error
    assert results[(200, "b")] >= 20  # b did take its share before it died
    assert retries() > before  # ...and requests that met it dead went elsewhere
    assert not states(worker)[b.address].healthy  # detected: b gets nothing more
    after = await load(worker, clients=3, each=30)
    assert set(after) <= {(200, "a"), (200, "c")}


async def test_killed_server_fails_only_requests_in_flight_on_it(proxy: Any, origins: Any):
    # POST is not idempotent: one sent to b when it dies cannot be retried; every other one
    # (a refused connect sends nothing) is.
    a, b = await origins("a", "b")
    worker = await proxy(config([{"address": o.address} for o in (a, b)], **CHECKED))

    async def kill(n: int) -> None:
        if n == 100:
            await b.kill()

    results = await load(worker, clients=4, each=75, method="POST", at=kill)
    errors = {k: n for k, n in results.items() if k[0] != 200}
    assert sum(errors.values()) <= 4, results  # at most one in flight per client
    assert set(errors) <= {(502, "backend_failed")}


async def test_server_that_never_answers_is_timed_out_then_ejected(proxy: Any, origins: Any):
    ok, hang = await origins("ok", "hang:hang")
    data = config(
        [{"address": hang.address}, {"address": ok.address}],
        passive={"consecutive_failures": 1, "base_ejection": "30s"},
    )
    data["defaults"] = {"timeouts": {"request": "300ms"}}
    worker = await proxy(data)
    client = Client(worker.addresses["web"])
    answers = [await client.get() for _ in range(12)]
    client.close()
    assert answers[0] == (504, answers[0][1], "backend_timeout")  # the first pick is `hang`
    assert all(a[:2] == (200, "ok") for a in answers[1:]), answers  # ejected after one
    assert not states(worker)[hang.address].healthy


async def test_returning_server_rejoins_after_threshold_and_ramps_up(proxy: Any, origins: Any):
    a, b = await origins("a", "b")
    worker = await proxy(
        config([{"address": a.address}, {"address": b.address}], slow_start="1500ms", **CHECKED)
    )
    state = states(worker)[b.address]
    await b.kill()
    await wait_until(lambda: not state.healthy, what="b down")
    await b.start()
    back = time.monotonic()
    await wait_until(lambda: state.healthy, what="b up again")
    assert time.monotonic() - back >= 0.1  # healthy_threshold 2 checks, 100ms apart
    assert state.effective < 0.3 * state.weight  # slow start: a small share at first

    early = await load(worker, clients=1, each=100)
    await wait_until(lambda: state.effective == state.weight, timeout=3, what="ramp done")
    late = await load(worker, clients=1, each=100)
    assert early[(200, "b")] < 25, early  # ~10-20% of the traffic while ramping
    assert 40 <= late[(200, "b")] <= 60, late  # its full share after
    assert sum(early.values()) == sum(late.values()) == 100


async def test_backup_takes_over_then_all_down_is_503(proxy: Any, origins: Any):
    a, b, spare = await origins("a", "b", "spare")
    servers = [{"address": a.address}, {"address": b.address}]
    worker = await proxy(config([*servers, {"address": spare.address, "backup": True}], **CHECKED))
    primaries = await load(worker, clients=2, each=20)
    assert set(primaries) == {(200, "a"), (200, "b")}  # the backup idles while primaries can
    await a.kill()
    await b.kill()
    st = states(worker)
    await wait_until(lambda: not st[a.address].healthy and not st[b.address].healthy, what="down")
    assert set(await load(worker, clients=2, each=20)) == {(200, "spare")}
    await spare.kill()
    await wait_until(lambda: not st[spare.address].healthy, what="spare down")
    assert set(await load(worker, clients=2, each=5)) == {(503, "no_healthy_server")}

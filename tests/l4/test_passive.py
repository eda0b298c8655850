"""Passive checks on tcp listeners: a refused or timed-out connect to a server counts as a
failure of that server, a connect as a success; enough failures in a row eject it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lb.core.balancer import ServerState
from lb.proxy.health.checker import PoolHealth
from tests.conftest import hanging_address
from tests.integration.helpers import free_port
from tests.l4.conftest import config, metric, open_to

PASSIVE = {"consecutive_failures": 2, "base_ejection": "30s", "max_ejected_percent": 50}


def tcp_pool(*addresses: str, **keys: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    listeners = {"tcp": {"bind": "127.0.0.1:0", "mode": "tcp", "pool": "p"}}
    return listeners, {"p": {"servers": [{"address": a} for a in addresses], **keys}}


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"L")
    await writer.drain()
    await reader.read()


async def one_connection(worker: Any) -> bytes:
    reader, writer = await open_to(worker)
    try:
        return await asyncio.wait_for(reader.readexactly(1), 5)
    finally:
        writer.close()


def healthy(worker: Any, address: str) -> bool:
    servers = worker.runtime.pools["p"].servers
    return next(s.state.healthy for s in servers if s.address == address)


async def test_refused_connects_eject_the_server(tcp_backend, lb) -> None:
    live = await tcp_backend(answer)
    dead = f"127.0.0.1:{free_port()}"
    worker = await lb(config(*tcp_pool(dead, live.address, passive=PASSIVE)))
    for _ in range(4):  # round robin: the dead server is tried on every other connection
        assert await one_connection(worker) == b"L"
    assert not healthy(worker, dead) and healthy(worker, live.address)

    refused = metric("lb_upstream_connect_errors_total", pool="p", server=dead, cause="refused")
    for _ in range(4):  # ejected: not tried any more
        assert await one_connection(worker) == b"L"
    after = metric("lb_upstream_connect_errors_total", pool="p", server=dead, cause="refused")
    assert after == refused
    assert live.connections == 8


async def test_a_connect_timeout_is_a_failure(tcp_backend, lb) -> None:
    live = await tcp_backend(answer)
    with hanging_address() as stuck:
        passive = {**PASSIVE, "consecutive_failures": 1}
        text = config(
            *tcp_pool(stuck, live.address, passive=passive, timeouts={"connect": "200ms"})
        )
        worker = await lb(text)
        assert await one_connection(worker) == b"L"  # after the stuck server timed out
        assert not healthy(worker, stuck)


async def test_connects_are_successes_and_end_a_failure_streak(
    tcp_backend, lb, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, bool]] = []
    observe = PoolHealth.observe

    def spy(self: PoolHealth, state: ServerState, failed: bool) -> None:
        seen.append((state.address, failed))
        observe(self, state, failed)

    monkeypatch.setattr(PoolHealth, "observe", spy)
    live = await tcp_backend(answer)
    dead = f"127.0.0.1:{free_port()}"
    worker = await lb(config(*tcp_pool(dead, live.address, passive=PASSIVE)))
    assert await one_connection(worker) == b"L"
    assert seen == [(dead, True), (live.address, False)]
    assert healthy(worker, dead)  # one failure of the two it takes

    live.server.close()  # type: ignore[union-attr]  # from now on both refuse
    await live.server.wait_closed()  # type: ignore[union-attr]
    reader, writer = await open_to(worker)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # no server left
    writer.close()
    assert not healthy(worker, dead)  # its second failure in a row
    assert healthy(worker, live.address)  # its first, after a success


async def test_without_passive_nothing_is_ejected(tcp_backend, lb) -> None:
    live = await tcp_backend(answer)
    dead = f"127.0.0.1:{free_port()}"
    worker = await lb(config(*tcp_pool(dead, live.address)))
    assert worker.runtime.pools["p"].passive is None
    for _ in range(6):
        assert await one_connection(worker) == b"L"
    assert healthy(worker, dead)

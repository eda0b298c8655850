"""Fixtures for the L4 tests: an in-process lb worker, TCP and UDP backends on 127.0.0.1:0.

Every test runs on uvloop, as `lb run` does. Backends count their connections and keep the
tasks serving them, so a test can assert that nothing reached a server, and teardown is clean.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop
import yaml

from lb.config import load_config_text
from lb.proxy.proxy import Proxy

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@dataclass
class TcpBackend:
    name: str
    server: asyncio.Server | None = None
    port: int = 0
    connections: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def tcp_backend() -> AsyncIterator[Callable[..., Awaitable[TcpBackend]]]:
    made: list[TcpBackend] = []

    async def make(
        handler: Handler, name: str = "s", backlog: int = 100, ssl: Any = None
    ) -> TcpBackend:
        backend = TcpBackend(name)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            backend.connections += 1
            task = asyncio.current_task()
            assert task is not None
            backend.tasks.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                backend.tasks.discard(task)
                writer.close()

        backend.server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=backlog, ssl=ssl)
        backend.port = backend.server.sockets[0].getsockname()[1]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        assert backend.server is not None
        backend.server.close()
        for task in list(backend.tasks):
            task.cancel()


def config(listeners: dict[str, Any], pools: dict[str, Any], **extra: Any) -> str:
    return yaml.safe_dump(
        {"version": 1, "listeners": listeners, "pools": pools, "access_log": {"enabled": False}}
        | extra
    )


@pytest.fixture
def lb(start_worker: Callable[..., Awaitable[Proxy]]) -> Callable[[str], Awaitable[Proxy]]:
    async def start(text: str) -> Proxy:
        return await start_worker(load_config_text(text))

    return start


async def open_to(
    worker: Proxy, listener: str = "tcp", **kw: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = worker.addresses[listener]
    return await asyncio.wait_for(asyncio.open_connection(host, port, **kw), 5)


async def read_all(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


def metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return value or 0.0

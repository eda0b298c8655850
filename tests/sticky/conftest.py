"""Fixtures for sticky sessions and canaries: a worker on one parser, named origins, and a
client that keeps a cookie jar."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import yaml

from lb.config import Config, load_config_text
from lb.proxy.proxy import Proxy
from tests.conftest import Origin, RawClient, handlers


def config_of(data: dict[str, Any]) -> Config:
    data = dict(data)
    data.setdefault("version", 1)
    data.setdefault("access_log", {"enabled": False})
    data.setdefault("sticky_secret", "test-secret-0123456789")
    for listener in data.get("listeners", {}).values():
        listener.setdefault("bind", "127.0.0.1:0")
    return load_config_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def worker(
    start_worker: Callable[..., Awaitable[Proxy]],
) -> Callable[[dict[str, Any]], Awaitable[Proxy]]:
    async def start(data: dict[str, Any]) -> Proxy:
        return await start_worker(config_of(data), parser_kind="httptools")

    return start


@pytest.fixture
async def named(origin: Callable[..., Awaitable[Origin]]) -> Callable[[str], Awaitable[Origin]]:
    """`await named("a")`: an origin that answers its name as the body."""

    async def start(name: str, status: int = 200) -> Origin:
        return await origin(handlers.fixed(name.encode(), status))

    return start


class Jar:
    """One client: a connection and the cookies lb gave it."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []  # Set-Cookie values of the last response

    async def get(self, path: str = "/", headers: dict[str, str] | None = None) -> str:
        lines = [f"GET {path} HTTP/1.1", "Host: example.com"]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        r = await self.client.request(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.set_cookies = r.all("set-cookie")
        for value in self.set_cookies:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return f"{r.status} {r.body.decode()}" if r.status != 200 else r.body.decode()


@pytest.fixture
def jar(connect: Callable[..., Awaitable[RawClient]]) -> Callable[[Proxy], Awaitable[Jar]]:
    async def open_(w: Proxy) -> Jar:
        return Jar(await connect(w))

    return open_

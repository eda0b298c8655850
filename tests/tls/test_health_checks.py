"""Active health checks of a pool with `tls`: each probe does the TLS handshake, verified as the
pool says, so a server lb would refuse to proxy to is DOWN, and one it trusts is UP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lb.proxy.health.local import LocalHealth
from lb.proxy.health.probes import Target
from lb.proxy.proxy import Proxy
from tests.conftest import Origin, handlers, wait_until
from tests.tls.conftest import Pki, get, pool_config, tls_connect

pytestmark = pytest.mark.timeout(30)


def checked_pool(o: Origin, tls: str, check: str) -> str:
    return pool_config(
        o,
        tls,
        f"    health_check: {{{check}, interval: 100ms, timeout: 2s, healthy_threshold: 1,"
        " unhealthy_threshold: 1}\n",
    )


def target(worker: Proxy, o: Origin) -> Target:
    assert isinstance(worker.health, LocalHealth)
    return worker.health.checker.targets[("app", o.address)]


def healthy(worker: Proxy, o: Origin) -> bool:
    return worker.runtime.pools["app"].servers[0].state.healthy


def checks(o: Origin) -> list[str]:
    return [r.target for r in o.requests if r.target == "/healthz"]


@pytest.mark.parametrize("check", ["type: http, path: /healthz", "type: tcp"])
async def test_a_trusted_tls_server_is_up(
    pki: Pki,
    tls_origin: Callable[..., Awaitable[Origin]],
    lb: Callable[[str], Awaitable[Proxy]],
    connect: Any,
    check: str,
) -> None:
    o = await tls_origin(handlers.fixed(b"ok"))
    worker = await lb(checked_pool(o, f"{{ca: '{pki.ca_file}', sni: app.internal}}", check))
    await wait_until(lambda: target(worker, o).counter.confirmed)
    assert target(worker, o).counter.up and healthy(worker, o)
    assert "app.internal" in o.names  # type: ignore[attr-defined]  # the pool's SNI
    if check.startswith("type: http"):
        assert checks(o) and target(worker, o).detail == "status 200"
    else:
        assert target(worker, o).detail == "TLS handshake done" and not o.requests
    reply = await (await connect(worker)).request(get())
    assert reply.status == 200 and reply.body == b"ok"


@pytest.mark.parametrize("check", ["type: http, path: /healthz", "type: tcp"])
@pytest.mark.parametrize(
    "tls",
    [
        "{{ca: '{other}'}}",  # a CA that did not sign the server's certificate
        "{{ca: '{ca}', sni: wrong.internal}}",  # signed, but for another name
    ],
)
async def test_an_untrusted_tls_server_is_down(
    pki: Pki,
    tls_origin: Callable[..., Awaitable[Origin]],
    lb: Callable[[str], Awaitable[Proxy]],
    connect: Any,
    tls: str,
    check: str,
) -> None:
    o = await tls_origin(handlers.fixed(b"ok"))
    pool_tls = tls.format(ca=pki.ca_file, other=pki.other_ca_file)
    worker = await lb(checked_pool(o, pool_tls, check))
    await wait_until(lambda: not healthy(worker, o))
    assert target(worker, o).detail.startswith("TLS certificate refused")
    assert not o.requests  # no check request went out on an unverified connection
    reply = await (await connect(worker)).request(get())
    assert reply.status == 503  # no healthy server: not even tried


async def test_the_same_server_over_plain_tcp_is_down(
    pki: Pki, tls_origin: Callable[..., Awaitable[Origin]], lb: Callable[[str], Awaitable[Proxy]]
) -> None:
    """Without `tls`, the HTTP check of a TLS server gets no HTTP answer: DOWN (the probe's
    handshake is what makes the difference, not the server)."""
    o = await tls_origin(handlers.fixed(b"ok"))
    worker = await lb(checked_pool(o, "", "type: http, path: /healthz"))
    await wait_until(lambda: not healthy(worker, o))
    # Still a good server for a client that speaks TLS to it.
    client = await tls_connect(("127.0.0.1", o.port), pki.client_context(), "app.internal")
    assert (await client.request(get(path="/healthz"))).status == 200
    client.close()

"""TLS from lb to a pool's servers: verified by default, against the system's CAs or `ca`."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tests.conftest import Origin, handlers
from tests.tls.conftest import Pki, get

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def tls_origin(pki: Pki):
    """An HTTPS origin whose certificate (from pki.ca) names app.internal and 127.0.0.1;
    `origin.names` records the SNI of every handshake."""
    started: list[Origin] = []

    async def start() -> Origin:
        leaf = pki.ca.issue_cert("app.internal", "127.0.0.1")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(ctx)
        o = Origin(handlers.fixed(b"secure"))
        o.names = []  # type: ignore[attr-defined]
        ctx.sni_callback = lambda sslobj, name, _ctx: o.names.append(name)  # type: ignore[attr-defined]
        o.server = await asyncio.start_server(o._serve, "127.0.0.1", 0, ssl=ctx)
        o.port = o.server.sockets[0].getsockname()[1]
        started.append(o)
        return o

    yield start
    for o in started:
        await o.close()


def pool_config(o: Origin, tls: str) -> str:
    return f"""
listeners: {{web: {{bind: "127.0.0.1:0"}}}}
routes: [{{match: {{}}, pool: app}}]
pools:
  app:
    tls: {tls}
    servers: [{{address: "{o.address}"}}]
"""


@pytest.mark.parametrize(
    ("tls", "sni"),
    [
        ("{{ca: '{ca}', sni: app.internal}}", "app.internal"),
        ("{{ca: '{ca}'}}", None),  # verified against the address: 127.0.0.1 (no SNI for IPs)
        ("{{verify: false}}", None),
    ],
)
async def test_pool_speaks_tls_and_verifies(pki, tls_origin, lb, connect, tls, sni) -> None:
    o = await tls_origin()
    worker = await lb(pool_config(o, tls.format(ca=pki.ca_file)))
    client = await connect(worker)
    reply = await client.request(get())
    assert reply.status == 200 and reply.body == b"secure"
    assert o.names == [sni]  # type: ignore[attr-defined]
    # The TLS connection to the server is kept alive and reused.
    assert (await client.request(get())).status == 200
    assert o.connections == 1


@pytest.mark.parametrize(
    "tls",
    [
        "{{}}",  # verify by default, against the system's CAs: the test CA is not one
        "{{ca: '{other}'}}",  # a CA that did not sign the server's certificate
        "{{ca: '{ca}', sni: wrong.internal}}",  # signed, but for another name
    ],
)
async def test_an_untrusted_server_is_refused(pki, tls_origin, lb, connect, tls) -> None:
    o = await tls_origin()
    worker = await lb(pool_config(o, tls.format(ca=pki.ca_file, other=pki.other_ca_file)))
    client = await connect(worker)
    reply = await client.request(get())
    assert reply.status == 502
    assert reply.header("x-lb-error") == "backend_failed"
    assert b"(tls)" in reply.body
    assert not o.requests

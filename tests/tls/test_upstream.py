"""TLS from lb to a pool's servers: verified by default, against the system's CAs or `ca`."""

from __future__ import annotations

import pytest

from lb.config import load_config_text
from tests.tls.conftest import get, pool_config

pytestmark = pytest.mark.timeout(30)


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


async def test_a_rewritten_ca_file_is_read_again_on_reload(pki, tls_origin, lb, connect) -> None:
    o = await tls_origin()
    ca = pki.root / "pool-ca.pem"
    ca.write_bytes(pki.other_ca_file.read_bytes())  # not the CA that signed the server
    text = pool_config(o, f"{{ca: '{ca}'}}")
    worker = await lb(text)
    client = await connect(worker)
    assert (await client.request(get())).status == 502

    ca.write_bytes(pki.ca_file.read_bytes())  # the same config, the file rewritten
    worker.reload(load_config_text("version: 1\naccess_log: {enabled: false}\n" + text))
    client = await connect(worker)
    reply = await client.request(get())
    assert reply.status == 200 and reply.body == b"secure"

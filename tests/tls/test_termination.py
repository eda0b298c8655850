"""TLS termination on http listeners: SNI, protocol versions, ciphers, ALPN, forwarding headers,
and clients that do not speak TLS or stall in the handshake."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl

import pytest
import trustme

from lb.config.tls import Certificate, ListenerTlsConfig
from lb.proxy.tls.contexts import CIPHERS, server_context
from tests.conftest import Origin, handlers, lb_garbage, wait_until
from tests.l4.conftest import metric
from tests.tls.conftest import Pki, get, peer, peer_serial, serial_of, tls_connect

pytestmark = pytest.mark.timeout(30)

# A refused handshake: the server's alert (ssl.SSLError), or the reset that follows it.
REFUSED = (ssl.SSLError, ConnectionError)


def config(pki: Pki, origin: Origin, tls_extra: str = "", **pairs: str) -> str:
    return f"""
listeners:
  web:
    bind: 127.0.0.1:0
    tls:
      certificates:
{pairs["certs"]}
{tls_extra}
routes: [{{match: {{}}, pool: app}}]
pools: {{app: {{servers: [{{address: "{origin.address}"}}]}}}}
"""


@pytest.fixture
async def three(pki, origin, lb):
    """A listener with a default certificate, an exact-name one and a wildcard one."""
    app = await origin(handlers.echo())
    default = pki.pair("default", "default.test")
    exact = pki.pair("exact", "www.example.test", "example.test")
    wild = pki.pair("wild", "*.api.test")
    certs = "\n".join(f"        - {p.yaml}" for p in (default, exact, wild))
    worker = await lb(config(pki, app, certs=certs))
    return worker, {"default": default, "exact": exact, "wild": wild}, app


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("www.example.test", "exact"),
        ("example.test", "exact"),
        ("EXAMPLE.test", "exact"),
        ("v1.api.test", "wild"),
        ("default.test", "default"),
    ],
)
async def test_sni_picks_the_certificate(three, pki, server_name, expected) -> None:
    worker, pairs, _ = three
    client = await tls_connect(worker.addresses["web"], pki.client_context(), server_name)
    assert peer_serial(client) == serial_of(pairs[expected])
    reply = await client.request(get(server_name))
    assert reply.status == 200
    client.close()


@pytest.mark.parametrize("server_name", [None, "unknown.test", "a.b.api.test", "api.test"])
async def test_no_or_unknown_name_gets_the_default(three, pki, server_name) -> None:
    # a.b.api.test: a wildcard covers one label only (RFC 6125 §6.4.3).
    worker, pairs, _ = three
    ctx = pki.client_context(check_hostname=False)
    client = await tls_connect(worker.addresses["web"], ctx, server_name)
    assert peer_serial(client) == serial_of(pairs["default"])
    client.close()


async def test_names_narrow_what_a_certificate_is_chosen_for(pki, origin, lb) -> None:
    app = await origin(handlers.fixed())
    default = pki.pair("default", "default.test")
    wild = pki.pair("wild", "*.example.test")
    narrowed = f"{{cert: '{wild.cert}', key: '{wild.key}', names: [shop.example.test]}}"
    certs = f"        - {default.yaml}\n        - {narrowed}"
    worker = await lb(config(pki, app, certs=certs))
    ctx = pki.client_context(check_hostname=False)
    for name, chosen in (("shop.example.test", wild), ("blog.example.test", default)):
        client = await tls_connect(worker.addresses["web"], ctx, name)
        assert peer_serial(client) == serial_of(chosen), name
        client.close()


async def test_forwarded_proto_is_https_and_alpn_is_http11(three, pki) -> None:
    worker, _, _ = three
    ctx = pki.client_context()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    client = await tls_connect(worker.addresses["web"], ctx, "www.example.test")
    assert peer(client).selected_alpn_protocol() == "http/1.1"
    reply = await client.request(get("www.example.test", "/x", "X-Forwarded-Proto: http\r\n"))
    seen = dict((k.lower(), v) for k, v in json.loads(reply.body)["headers"])
    assert seen["x-forwarded-proto"] == "https"
    # Kept alive over TLS: a second request on the same connection.
    assert (await client.request(get("www.example.test"))).status == 200
    client.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_tls_10_and_11_are_refused(three, pki, version) -> None:
    worker, _, _ = three
    ctx = pki.client_context(check_hostname=False)
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # let this client offer the old versions at all
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = version
    before = metric("lb_connection_errors_total", listener="web", cause="tls_handshake")
    # The server answers a protocol_version alert (or just closes): either way, no session.
    with pytest.raises(REFUSED):
        await tls_connect(worker.addresses["web"], ctx, "www.example.test")
    # Refused by lb, not by this client's own OpenSSL before anything was sent.
    await wait_until(
        lambda: (
            metric("lb_connection_errors_total", listener="web", cause="tls_handshake")
            == before + 1
        )
    )


async def test_tls12_works_by_default_and_min_version_13_refuses_it(pki, origin, lb) -> None:
    app = await origin(handlers.fixed())
    pair = pki.pair("one", "a.test")
    ctx12 = pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)

    default = await lb(config(pki, app, certs=f"        - {pair.yaml}"))
    client = await tls_connect(default.addresses["web"], ctx12, "a.test")
    assert peer(client).version() == "TLSv1.2"
    cipher = peer(client).cipher()
    assert cipher is not None and cipher[0].startswith("ECDHE-") and "GCM" in cipher[0]
    assert (await client.request(get())).status == 200
    client.close()

    only13 = await lb(config(pki, app, '      min_version: "1.3"', certs=f"        - {pair.yaml}"))
    with pytest.raises(REFUSED):
        await tls_connect(only13.addresses["web"], ctx12, "a.test")
    client = await tls_connect(only13.addresses["web"], pki.client_context(), "a.test")
    assert peer(client).version() == "TLSv1.3"
    client.close()


@functools.cache
def _rsa_leaf() -> trustme.LeafCert:
    return trustme.CA(key_type=trustme.KeyType.RSA).issue_cert(
        "a.test", key_type=trustme.KeyType.RSA
    )


@pytest.mark.parametrize(
    ("ciphers", "accepted"),
    [
        ("ECDHE-RSA-AES128-GCM-SHA256", True),
        ("ECDHE-RSA-CHACHA20-POLY1305", True),
        ("AES128-GCM-SHA256", False),  # AEAD, but RSA key exchange: no forward secrecy
        ("ECDHE-RSA-AES128-SHA", False),  # forward secrecy, but CBC
        ("AES256-SHA", False),
        ("DHE-RSA-AES128-GCM-SHA256", False),  # finite-field DHE is not offered
    ],
)
async def test_tls12_ciphers_are_ecdhe_with_aead_only(pki, origin, lb, ciphers, accepted) -> None:
    app = await origin(handlers.fixed())
    rsa = pki.write("rsa", _rsa_leaf())
    worker = await lb(config(pki, app, certs=f"        - {rsa.yaml}"))
    ctx = pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2, check_hostname=False)
    ctx.verify_mode = ssl.CERT_NONE  # issued by another CA: made once, RSA keys are slow
    ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    if accepted:
        client = await tls_connect(worker.addresses["web"], ctx, "a.test")
        cipher = peer(client).cipher()
        assert cipher is not None and cipher[0] == ciphers
        client.close()
    else:
        with pytest.raises(REFUSED):
            await tls_connect(worker.addresses["web"], ctx, "a.test")


def test_contexts_are_hardened(pki) -> None:
    pair = pki.pair("one", "a.test")
    tls = ListenerTlsConfig(certificates=[Certificate(cert=str(pair.cert), key=str(pair.key))])
    ctx = server_context(tls, tls.certificates[0])
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and names <= set(CIPHERS.split(":"))
    assert all(c["aead"] for c in ctx.get_ciphers())


async def test_plain_http_and_garbage_are_dropped(three, pki) -> None:
    worker, _, _ = three
    host, port = worker.addresses["web"]
    for junk in (get(), b"\x00\xff" * 100):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(junk)
        async with asyncio.timeout(5):
            data = await reader.read(65536)
            while data and not data.startswith(b"HTTP"):
                more = await reader.read(65536)
                if not more:
                    break
                data += more
        assert not data.startswith(b"HTTP")  # no HTTP answer: a TLS alert at most, then close
        writer.close()
    # The listener is fine after that.
    client = await tls_connect(worker.addresses["web"], pki.client_context(), "example.test")
    assert (await client.request(get("example.test"))).status == 200
    client.close()


async def test_stalled_handshake_is_dropped_after_the_timeout(pki, origin, lb) -> None:
    app = await origin(handlers.fixed())
    pair = pki.pair("one", "a.test")
    worker = await lb(
        config(pki, app, "      handshake_timeout: 300ms", certs=f"        - {pair.yaml}")
    )
    host, port = worker.addresses["web"]
    # Connected, then half a ClientHello record header: the handshake never finishes.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x16\x03\x01\x02")
    busy = await tls_connect((host, port), pki.client_context(), "a.test")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        assert await reader.read(65536) == b""
    assert loop.time() - started < 3
    # The other connection, open all along, still works.
    assert (await busy.request(get())).status == 200
    busy.close()
    writer.close()


async def test_closed_tls_connections_are_freed_at_once(three, pki) -> None:
    """A TLS connection's objects (and OpenSSL's buffers behind them) are freed when it
    closes, not left in reference cycles for the cyclic GC."""
    worker, _, _ = three
    with lb_garbage() as garbage:
        for _ in range(3):
            client = await tls_connect(
                worker.addresses["web"], pki.client_context(), "default.test"
            )
            reply = await client.request(get("default.test", extra="Connection: close\r\n"))
            assert reply.status == 200
            assert await client.closed()
            client.close()
        await wait_until(lambda: not worker.connections["web"])
    assert garbage == []

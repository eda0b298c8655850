"""TLS passthrough by SNI: a real TLS client, TLS servers behind lb, lb never terminating TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.l4.conftest import config, open_to

NAMES = ["a.example.com", "*.wild.example.com", "other.org", "b.example.com"]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lb test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("certs")
    (d / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return d / "cert.pem", d / "key.pem"


async def tls_backend(tcp_backend, cert, name: bytes):  # type: ignore[no-untyped-def]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(name + b":" + (await reader.readline()))
        await writer.drain()

    return await tcp_backend(handler, name=name.decode(), ssl=ctx)


async def ask(worker, cert, server_name: str | None) -> bytes:  # type: ignore[no-untyped-def]
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    if server_name is None:
        ctx.check_hostname = False
    reader, writer = await open_to(worker, ssl=ctx, server_hostname=server_name or "")
    writer.write(b"hello\n")
    answer = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return answer


async def test_sni_routes_pick_the_pool(tcp_backend, lb, cert):
    a = await tls_backend(tcp_backend, cert, b"a")
    wild = await tls_backend(tcp_backend, cert, b"wild")
    default = await tls_backend(tcp_backend, cert, b"default")
    worker = await lb(
        config(
            {
                "tcp": {
                    "bind": "127.0.0.1:0",
                    "mode": "tcp",
                    "pool": "default",
                    "routes": [
                        {"match": {"sni": "a.example.com"}, "pool": "a"},
                        {"match": {"sni": "*.wild.example.com"}, "pool": "wild"},
                    ],
                }
            },
            {
                "a": {"servers": [{"address": a.address}]},
                "wild": {"servers": [{"address": wild.address}]},
                "default": {"servers": [{"address": default.address}]},
            },
        )
    )
    assert await ask(worker, cert, "a.example.com") == b"a:hello\n"
    assert await ask(worker, cert, "x.wild.example.com") == b"wild:hello\n"
    assert await ask(worker, cert, "b.example.com") == b"default:hello\n"
    assert await ask(worker, cert, None) == b"default:hello\n"  # no server name at all
    assert (a.connections, wild.connections, default.connections) == (1, 1, 2)


async def test_not_tls_goes_to_the_default_pool(tcp_backend, lb):
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"plain:" + await reader.readline())

    default = await tcp_backend(plain)
    other = await tcp_backend(plain)
    worker = await lb(
        config(
            {
                "tcp": {
                    "bind": "127.0.0.1:0",
                    "mode": "tcp",
                    "pool": "default",
                    "routes": [{"match": {"sni": "a.example.com"}, "pool": "other"}],
                }
            },
            {
                "default": {"servers": [{"address": default.address}]},
                "other": {"servers": [{"address": other.address}]},
            },
        )
    )
    reader, writer = await open_to(worker)
    writer.write(b"hi\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"plain:hi\n"
    assert (default.connections, other.connections) == (1, 0)
    writer.close()


async def test_accept_proxy_then_sni(tcp_backend, lb, cert):
    a = await tls_backend(tcp_backend, cert, b"a")
    worker = await lb(
        config(
            {
                "tcp": {
                    "bind": "127.0.0.1:0",
                    "mode": "tcp",
                    "pool": "a",
                    "accept_proxy": True,
                    "routes": [{"match": {"sni": "a.example.com"}, "pool": "a"}],
                }
            },
            {"a": {"servers": [{"address": a.address}]}},
        )
    )
    # A raw socket sends the PROXY header, then TLS starts on the same connection.
    reader, writer = await open_to(worker)
    writer.write(b"PROXY TCP4 10.1.1.1 10.1.1.2 5 6\r\n")
    await writer.drain()
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    await writer.start_tls(ctx, server_hostname="a.example.com")
    writer.write(b"hello\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"a:hello\n"
    writer.close()

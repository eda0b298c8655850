"""Fixtures for the TLS tests: certificates made on the fly (trustme), an in-process lb worker
with TLS listeners, and real `ssl` clients.

Every TLS test runs on both event loops lb can serve on (asyncio's and uvloop's), since each
has its own TLS implementation.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop

from lb.config import load_config_text
from lb.proxy.proxy import Proxy
from tests.conftest import Handler, Origin, RawClient, handlers


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@dataclass
class Pair:
    cert: Path
    key: Path
    leaf: trustme.LeafCert

    @property
    def yaml(self) -> str:
        return f"{{cert: '{self.cert}', key: '{self.key}'}}"


class Pki:
    """A CA (and a second, untrusted one) issuing certificates into a temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()  # not trusted by anyone in the tests
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.other_ca_file = root / "other-ca.pem"
        self.other_ca.cert_pem.write_to_path(str(self.other_ca_file))

    def pair(self, name: str, *identities: str, ca: trustme.CA | None = None, **kw: Any) -> Pair:
        leaf = (ca or self.ca).issue_cert(*identities, **kw)
        return self.write(name, leaf)

    def write(self, name: str, leaf: trustme.LeafCert) -> Pair:
        cert, key = self.root / f"{name}.crt", self.root / f"{name}.key"
        # The chain file: leaf first, then intermediates (trustme issues from the root here).
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        return Pair(cert, key, leaf)

    def client_context(self, **kw: Any) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def lb(start_worker: Callable[..., Awaitable[Proxy]]) -> Callable[[str], Awaitable[Proxy]]:
    """`await lb(yaml)`: a Proxy serving the YAML (version and access_log may be left out)."""

    async def start(text: str) -> Proxy:
        if not text.lstrip().startswith("version:"):
            text = "version: 1\naccess_log: {enabled: false}\n" + text
        return await start_worker(load_config_text(text))

    return start


@pytest.fixture
async def tls_origin(pki: Pki) -> AsyncIterator[Callable[..., Awaitable[Origin]]]:
    """`await tls_origin(handler)`: an HTTPS origin whose certificate (from pki.ca) names
    app.internal and 127.0.0.1; `origin.names` records the SNI of every handshake."""
    started: list[Origin] = []

    async def start(handler: Handler | None = None) -> Origin:
        leaf = pki.ca.issue_cert("app.internal", "127.0.0.1")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(ctx)
        o = Origin(handler or handlers.fixed(b"secure"))
        o.names = []  # type: ignore[attr-defined]
        ctx.sni_callback = lambda sslobj, name, _ctx: o.names.append(name)  # type: ignore[attr-defined]
        started.append(await o.listen(ctx))
        return o

    yield start
    for o in started:
        await o.close()


def pool_config(o: Origin, tls: str, pool_keys: str = "") -> str:
    """One http listener routing everything to pool `app` of origin `o`, with pool `tls`
    (a flow mapping, or "" for none) and any more `pool_keys` (YAML lines of the pool)."""
    tls_line = f"    tls: {tls}\n" if tls else ""
    return f"""
listeners: {{web: {{bind: "127.0.0.1:0"}}}}
routes: [{{match: {{}}, pool: app}}]
pools:
  app:
{tls_line}{pool_keys}    servers: [{{address: "{o.address}"}}]
"""


async def tls_connect(
    address: tuple[str, int], ctx: ssl.SSLContext, server_name: str | None
) -> RawClient:
    """A TLS client; raises ssl.SSLError (or ConnectionError) when the handshake fails."""
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(
            *address, ssl=ctx, server_hostname=server_name, limit=1 << 20
        )
    return RawClient(reader, writer)


def peer(client: RawClient) -> ssl.SSLObject:
    sslobj = client.writer.get_extra_info("ssl_object")
    assert sslobj is not None
    return sslobj


def peer_serial(client: RawClient) -> int:
    """The serial number of the certificate the server presented."""
    from cryptography import x509

    der = peer(client).getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial_of(pair: Pair) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number


def get(host: str = "a.test", path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def one_listener_config(
    pki: Pki, address: str, listener_extra: str = "", tls_extra: str = ""
) -> str:
    """One TLS listener (certificate for a.test) routing everything to `address`; the extras
    are YAML lines added to the listener and to its `tls`."""
    pair = pki.pair("a", "a.test")
    return f"""
listeners:
  web:
    bind: 127.0.0.1:0
{listener_extra}    tls:
      certificates: [{pair.yaml}]
{tls_extra}
routes: [{{match: {{}}, pool: app}}]
pools: {{app: {{servers: [{{address: "{address}"}}]}}}}
"""

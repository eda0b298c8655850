"""Server name from a TLS ClientHello, and SNI routes, as tables (lb.core.sni)."""

from __future__ import annotations

import ssl

import pytest

from lb.core.sni import (
    ClientHello,
    ClientHelloError,
    SniRoutes,
    parse_client_hello,
    sni_matches,
)


def client_hello(server_name: str | None, **options: object) -> bytes:
    """The bytes a real TLS client (Python's ssl, so OpenSSL) sends first."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for key, value in options.items():
        setattr(ctx, key, value)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def split_records(hello: bytes, size: int) -> bytes:
    """The same ClientHello fragmented into records of at most `size` bytes (RFC 8446 §5.1)."""
    body = hello[5:]
    out = b""
    for i in range(0, len(body), size):
        fragment = body[i : i + size]
        out += hello[:3] + len(fragment).to_bytes(2, "big") + fragment
    return out


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.example.com", "a.example.com"),
        ("API.Example.COM", "api.example.com"),
        ("x" * 60 + ".example.org", "x" * 60 + ".example.org"),
        (None, None),
    ],
)
def test_real_client_hello(name: str | None, expected: str | None) -> None:
    assert parse_client_hello(client_hello(name)) == ClientHello(expected)


def test_tls12_only_client() -> None:
    hello = client_hello("old.example.com", maximum_version=ssl.TLSVersion.TLSv1_2)
    assert parse_client_hello(hello) == ClientHello("old.example.com")


def test_every_prefix_needs_more() -> None:
    hello = client_hello("a.example.com")
    for i in range(len(hello)):
        assert parse_client_hello(hello[:i]) is None, i
    assert parse_client_hello(hello + b"trailing") == ClientHello("a.example.com")


def test_hello_split_across_records() -> None:
    hello = split_records(client_hello("split.example.com"), 100)
    assert parse_client_hello(hello) == ClientHello("split.example.com")
    assert parse_client_hello(hello[:150]) is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\n", "not a TLS handshake"),
        (b"SSH-2.0-OpenSSH\r\n", "not a TLS handshake"),
        (b"\x16\x02\x00\x00\x10" + b"\x01" * 16, "not TLS"),
        (b"\x16\x03\x01\x00\x00", "record of 0 bytes"),
        (b"\x16\x03\x01\x50\x00", "record of 20480 bytes"),
        (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "type 2"),
        (b"\x16\x03\x01\x00\x05\x02", "type 2"),  # known before the record is whole
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "too long"),
        (b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03", "truncated"),
        (b"\x16\x03\x01\x00\x02\x01\x00\x17\x03\x03", "another record type"),
    ],
)
def test_refuses_what_is_not_a_client_hello(data: bytes, why: str) -> None:
    with pytest.raises(ClientHelloError, match=why):
        parse_client_hello(data)


def test_non_ascii_server_name_is_refused() -> None:
    hello = bytearray(client_hello("aaaa.example.com"))
    i = hello.index(b"aaaa.example.com")
    hello[i] = 0xC3
    with pytest.raises(ClientHelloError, match="not ASCII"):
        parse_client_hello(bytes(hello))


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("a.example.com", "a.example.com", True),
        ("A.Example.com", "a.example.com", True),
        ("a.example.com", "b.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "aexample.com", False),
    ],
)
def test_sni_matches(pattern: str, name: str, matches: bool) -> None:
    assert sni_matches(pattern, name) is matches


def test_routes_first_match_wins_else_default() -> None:
    routes = SniRoutes(
        [("api.example.com", "api"), ("*.example.com", "web"), ("api.example.com", "never")],
        "fallback",
    )
    assert routes.pool_for("api.example.com") == "api"
    assert routes.pool_for("www.example.com") == "web"
    assert routes.pool_for("example.org") == "fallback"
    assert routes.pool_for(None) == "fallback"
    assert repr(SniRoutes([], None)) == "<SniRoutes [] default=None>"

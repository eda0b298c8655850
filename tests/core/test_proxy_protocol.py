"""PROXY protocol v1/v2 parsing and building, as tables (lb.core.proxy_protocol)."""

from __future__ import annotations

import pytest

from lb.core.proxy_protocol import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    build_v1,
    build_v2,
    parse,
)

V2_TCP4 = (
    V2_SIGNATURE
    + bytes([0x21, 0x11, 0x00, 0x0C])
    + bytes([192, 0, 2, 1, 198, 51, 100, 7])
    + (56324).to_bytes(2, "big")
    + (443).to_bytes(2, "big")
)
V2_TCP6 = (
    V2_SIGNATURE
    + bytes([0x21, 0x21, 0x00, 0x24])
    + bytes.fromhex("20010db8000000000000000000000001")
    + bytes.fromhex("20010db8000000000000000000000002")
    + (1000).to_bytes(2, "big")
    + (2000).to_bytes(2, "big")
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\nGET / HTTP/1.1\r\n",
            ProxyHeader(1, ("192.0.2.1", 56324), ("198.51.100.7", 443), 45),
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 2000\r\n",
            ProxyHeader(1, ("2001:db8::1", 1000), ("2001:db8::2", 2000), 46),
        ),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None, 15)),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nx", ProxyHeader(1, None, None, 35)),
        (V2_TCP4 + b"rest", ProxyHeader(2, ("192.0.2.1", 56324), ("198.51.100.7", 443), 28)),
        (V2_TCP6, ProxyHeader(2, ("2001:db8::1", 1000), ("2001:db8::2", 2000), 52)),
        # TLVs after the addresses are skipped, counted in the length.
        (
            V2_TCP4[:14] + b"\x00\x11" + V2_TCP4[16:] + b"\x04\x00\x02ab",
            ProxyHeader(2, ("192.0.2.1", 56324), ("198.51.100.7", 443), 33),
        ),
        # LOCAL (a health check from the proxy itself) and UNSPEC: no addresses.
        (V2_SIGNATURE + b"\x20\x00\x00\x00", ProxyHeader(2, None, None, 16)),
        (V2_SIGNATURE + b"\x21\x00\x00\x00", ProxyHeader(2, None, None, 16)),
    ],
)
def test_parses_a_whole_header(data: bytes, expected: ProxyHeader) -> None:
    assert parse(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"P",
        b"PROXY",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443",
        b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r",
        V2_SIGNATURE[:5],
        V2_SIGNATURE,
        V2_TCP4[:-1],
    ],
)
def test_a_valid_prefix_needs_more(data: bytes) -> None:
    assert parse(data) is None


@pytest.mark.parametrize("whole", [V2_TCP4, V2_TCP6, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"])
def test_byte_by_byte(whole: bytes) -> None:
    for i in range(len(whole)):
        assert parse(whole[:i]) is None
    header = parse(whole)
    assert header is not None and header.length == len(whole)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\n", "no PROXY header"),
        (b"\x16\x03\x01", "no PROXY header"),
        (b"PROXX", "no PROXY header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "expected 6 fields"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "family must be"),
        (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "bad address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "is not IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "is not IPv6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not ended by CRLF"),
        (b"PROXY " + b"x" * 120, "longer than 107"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n", "not ASCII"),
        (V2_SIGNATURE[:11] + b"X", "no PROXY header"),
        (V2_SIGNATURE + b"\x11\x11\x00\x0c", "version 1, expected 2"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c", "unknown command"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4, "family needs 12"),
        (V2_SIGNATURE + b"\x21\x41\x00\x00", "unknown address family"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "too long"),
    ],
)
def test_refuses_what_is_not_a_header(data: bytes, why: str) -> None:
    with pytest.raises(ProxyProtocolError, match=why):
        parse(data)


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        (
            ("192.0.2.1", 56324),
            ("198.51.100.7", 443),
            b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n",
        ),
        (
            ("2001:db8::1", 1000),
            ("2001:db8::2", 2000),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 2000\r\n",
        ),
        # A dual-stack socket's v4-mapped address is said as IPv4.
        (("::ffff:10.0.0.1", 5), ("10.0.0.2", 6), b"PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n"),
        (None, ("10.0.0.2", 6), b"PROXY UNKNOWN\r\n"),
        (("10.0.0.1", 5), ("::1", 6), b"PROXY UNKNOWN\r\n"),
    ],
)
def test_build_v1(src: tuple[str, int] | None, dst: tuple[str, int], expected: bytes) -> None:
    assert build_v1(src, dst) == expected


def test_build_v2_exact_bytes() -> None:
    assert build_v2(("192.0.2.1", 56324), ("198.51.100.7", 443)) == V2_TCP4
    assert build_v2(("2001:db8::1", 1000), ("2001:db8::2", 2000)) == V2_TCP6
    assert build_v2(None, None) == V2_SIGNATURE + b"\x21\x00\x00\x00"


@pytest.mark.parametrize(
    ("src", "dst"),
    [(("10.1.2.3", 65535), ("127.0.0.1", 0)), (("fe80::1", 1), ("::", 2))],
)
def test_build_then_parse_round_trips(src: tuple[str, int], dst: tuple[str, int]) -> None:
    for build in (build_v1, build_v2):
        data = build(src, dst)
        assert parse(data + b"payload") == ProxyHeader(
            1 if build is build_v1 else 2, src, dst, len(data)
        )

"""The PROXY protocol (HAProxy's, versions 1 and 2), sans-IO: parse a header, build a header.

A load balancer that accepts PROXY learns the real client address from the first bytes of the
connection, before the application protocol starts; one that sends PROXY tells its servers the
same. The spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt ("the spec" below).

`parse(data)` looks at the bytes received so far and returns one of:

- `None`: the bytes are a valid beginning of a header; call again with more;
- a `ProxyHeader`: the addresses and `length`, the number of bytes the header took (the rest of
  `data` is the application's);
- or raises `ProxyProtocolError` naming what is wrong. Invariant: a header is never accepted
  from a prefix that could still turn out malformed, and a stream that cannot be a header is
  refused as soon as one byte shows it.

`build_v1(src, dst)` and `build_v2(src, dst)` return the header bytes for a TCP connection from
`src` to `dst`, each a (host, port) with an IPv4 or IPv6 literal host.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

__all__ = [
    "V1_MAX",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyProtocolError",
    "build_v1",
    "build_v2",
    "parse",
]

Address = tuple[str, int]

V1_PREFIX = b"PROXY "
# The spec, 2.1: "a receiver must wait for the CRLF ... the maximum line length is 107 bytes".
V1_MAX = 107
# The spec, 2.2: the 12-byte signature that no v1 header or ordinary protocol can start with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16  # signature, version/command, family/protocol, length (2 bytes)
# Address block sizes by family/protocol byte (the spec, 2.2): TCP/UDP over IPv4, IPv6, unix.
_V2_FAMILIES = {0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}
_V2_MAX_LENGTH = 1024  # address block + TLVs; real senders use a few hundred bytes at most


class ProxyProtocolError(ValueError):
    """The bytes are not a PROXY header; the message says why, for the log."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. `src`/`dst` are None when the sender gave no addresses (v1 UNKNOWN, v2
    LOCAL or an unspecified or unix family): the connection's own addresses stand."""

    version: int
    src: Address | None
    dst: Address | None
    length: int


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`, None if more bytes are needed, or ProxyProtocolError."""
    if not data:
        return None
    if data[0] == 0x50:  # "P"
        return _parse_v1(data)
    if data[0] == 0x0D:  # "\r"
        return _parse_v2(data)
    raise ProxyProtocolError(f"no PROXY header: the connection starts with {data[:8]!r}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    head = data[: len(V1_PREFIX)]
    if not V1_PREFIX.startswith(head):
        raise ProxyProtocolError(f"no PROXY header: the connection starts with {data[:8]!r}")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError(f"PROXY v1 line longer than {V1_MAX} bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyProtocolError("PROXY v1 line not ended by CRLF")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    parts = line.split(" ")
    length = end + 2
    # The spec, 2.1: "PROXY UNKNOWN" may be followed by anything up to CRLF; ignore it.
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, None, None, length)
    if len(parts) != 6:
        raise ProxyProtocolError(f"PROXY v1 line {line!r}: expected 6 fields")
    _, family, src_ip, dst_ip, src_port, dst_port = parts
    if family not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"PROXY v1 line {line!r}: family must be TCP4, TCP6 or UNKNOWN")
    version = 4 if family == "TCP4" else 6
    src = (_v1_ip(src_ip, version, line), _v1_port(src_port, line))
    dst = (_v1_ip(dst_ip, version, line), _v1_port(dst_port, line))
    return ProxyHeader(1, src, dst, length)


def _v1_ip(text: str, version: int, line: str) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 line {line!r}: bad address {text!r}") from None
    if ip.version != version:
        raise ProxyProtocolError(f"PROXY v1 line {line!r}: {text!r} is not IPv{version}")
    return text


def _v1_port(text: str, line: str) -> int:
    # The spec: ports are decimal 0..65535 without leading zeros.
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyProtocolError(f"PROXY v1 line {line!r}: bad port {text!r}")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    sig = data[:12]
    if not V2_SIGNATURE.startswith(sig):
        raise ProxyProtocolError(f"no PROXY header: the connection starts with {data[:8]!r}")
    if len(data) < V2_HEADER:
        return None
    ver_cmd, fam, size = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2: version {ver_cmd >> 4}, expected 2")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyProtocolError(f"PROXY v2: unknown command {command}")
    if size > _V2_MAX_LENGTH:
        raise ProxyProtocolError(f"PROXY v2: header of {size} bytes is too long")
    length = V2_HEADER + size
    if len(data) < length:
        return None
    if command == 0:  # LOCAL: a health check from the proxy itself; no addresses
        return ProxyHeader(2, None, None, length)
    need = _V2_FAMILIES.get(fam)
    if fam == 0x00:
        return ProxyHeader(2, None, None, length)  # UNSPEC
    if need is None:
        raise ProxyProtocolError(f"PROXY v2: unknown address family/protocol 0x{fam:02x}")
    if size < need:
        raise ProxyProtocolError(f"PROXY v2: {size} bytes of addresses, family needs {need}")
    body = data[V2_HEADER:length]
    if fam >> 4 == 1:
        src_ip, dst_ip, src_port, dst_port = struct.unpack_from("!4s4sHH", body)
        src = (str(ipaddress.IPv4Address(src_ip)), src_port)
        dst = (str(ipaddress.IPv4Address(dst_ip)), dst_port)
        return ProxyHeader(2, src, dst, length)
    if fam >> 4 == 2:
        src_ip, dst_ip, src_port, dst_port = struct.unpack_from("!16s16sHH", body)
        src = (str(ipaddress.IPv6Address(src_ip)), src_port)
        dst = (str(ipaddress.IPv6Address(dst_ip)), dst_port)
        return ProxyHeader(2, src, dst, length)
    return ProxyHeader(2, None, None, length)  # unix sockets: no IP address to use


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:1.2.3.4 from a dual-stack socket: say TCP4
    return ip


def build_v1(src: Address | None, dst: Address | None) -> bytes:
    """`PROXY TCP4 src dst sport dport\\r\\n`, or `PROXY UNKNOWN\\r\\n` when an address is
    missing or the two are of different families."""
    if src is None or dst is None:
        return b"PROXY UNKNOWN\r\n"
    s, d = _ip(src[0]), _ip(dst[0])
    if s.version != d.version:
        return b"PROXY UNKNOWN\r\n"
    family = "TCP4" if s.version == 4 else "TCP6"
    return f"PROXY {family} {s} {d} {src[1]} {dst[1]}\r\n".encode("ascii")


def build_v2(src: Address | None, dst: Address | None) -> bytes:
    """The binary header for a proxied TCP connection (command PROXY); family UNSPEC (the
    server keeps the connection's own addresses) when they are missing or of two families."""
    if src is not None and dst is not None:
        s, d = _ip(src[0]), _ip(dst[0])
        if s.version == d.version:
            fam = 0x11 if s.version == 4 else 0x21
            body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
            return V2_SIGNATURE + struct.pack("!BBH", 0x21, fam, len(body)) + body
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x00, 0)

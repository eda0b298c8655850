"""A stored response as bytes, and back (sans-IO): what the cache keeps in a store.

Layout of an entry (all integers big-endian):

    b"LBC1" | u32 n | n bytes of JSON head | body (zlib when "z" is true) | u32 CRC-32

The JSON head holds the response's status, reason and fields, its `StoredMeta` and the body's
length before compression. The CRC covers everything before it, so a truncated or corrupted
value (a store that lost part of it, a write cut short) is detected and dropped, never served.

A URL whose responses vary (`Vary`) keeps, under its primary key, a *variants record*
(b"LBV1" | JSON list of the Vary field names) and each variant under its own key.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

from lb.core.cache_policy import StoredMeta

ENTRY_MAGIC = b"LBC1"
VARIANTS_MAGIC = b"LBV1"
_U32 = struct.Struct(">I")


@dataclass(slots=True)
class Entry:
    meta: StoredMeta
    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # as stored: never-stored fields already gone
    body: bytes
    # The fields as a hit sends them (b"\r\nName: value"...), rendered on the first hit.
    rendered: bytes | None = field(default=None, compare=False, repr=False)
    dated: bool = field(default=False, compare=False, repr=False)  # holds Date: set with rendered
    # A fresh hit's fields with its Age and X-Cache, for the whole second of age they were made
    # at: a hot entry's answer is formatted once a second, not per hit.
    hit_fields: bytes = field(default=b"", compare=False, repr=False)
    hit_age: int = field(default=-1, compare=False, repr=False)

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers)


def encode_entry(entry: Entry, compress: bool = False) -> bytes:
    body = entry.body
    packed = zlib.compress(body, 1) if compress and len(body) > 256 else body
    head = {
        "s": entry.status,
        "r": entry.reason.decode("latin-1"),
        "h": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.headers],
        "m": entry.meta.to_dict(),
        "n": len(body),
        "z": packed is not body,
    }
    head_bytes = json.dumps(head, separators=(",", ":")).encode()
    data = b"".join((ENTRY_MAGIC, _U32.pack(len(head_bytes)), head_bytes, packed))
    return data + _U32.pack(zlib.crc32(data))


def decode_entry(data: bytes) -> Entry | None:
    """The entry, or None when `data` is not a whole, intact entry."""
    if len(data) < 12 or data[:4] != ENTRY_MAGIC:
        return None
    if _U32.unpack_from(data, len(data) - 4)[0] != zlib.crc32(memoryview(data)[:-4]):
        return None
    (n,) = _U32.unpack_from(data, 4)
    try:
        head = json.loads(data[8 : 8 + n])
        packed = data[8 + n : -4]
        body = zlib.decompress(packed) if head["z"] else bytes(packed)
        if len(body) != head["n"]:
            return None
        return Entry(
            meta=StoredMeta.from_dict(head["m"]),
            status=int(head["s"]),
            reason=head["r"].encode("latin-1"),
            headers=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in head["h"]),
            body=body,
        )
    except (ValueError, KeyError, TypeError, zlib.error):
        return None


def encode_variants(vary: tuple[bytes, ...]) -> bytes:
    return VARIANTS_MAGIC + json.dumps([v.decode("latin-1") for v in vary]).encode()


def decode_variants(data: bytes) -> tuple[bytes, ...] | None:
    """The Vary field names of a variants record; None when `data` is not one."""
    if data[:4] != VARIANTS_MAGIC:
        return None
    try:
        names = json.loads(data[4:])
        return tuple(str(n).encode("latin-1") for n in names)
    except (ValueError, TypeError):
        return None


def variant_store_key(primary: str, variant: str) -> str:
    """Where one variant of a URL with Vary is stored."""
    return f"{primary}\x00{variant}"

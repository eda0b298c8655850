"""Server names and certificates, sans-IO: whether a certificate covers a name, and which of a
listener's certificates answers the name a TLS client asks for (SNI, RFC 6066 §3).

Names are compared lower-case without a trailing dot. A wildcard stands for exactly one label,
the leftmost (RFC 6125 §6.4.3): "*.example.com" covers "a.example.com", but neither
"example.com" nor "a.b.example.com".

`NameIndex` picks by exact name first, then by wildcard, else the default (the first entry):
a client that sends no SNI, or a name no certificate lists, gets the default certificate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

__all__ = ["NameIndex", "covers", "normalize"]

T = TypeVar("T")


def normalize(name: str) -> str:
    return name.strip().lower().rstrip(".")


def covers(pattern: str, name: str) -> bool:
    """Does the certificate name `pattern` ("a.example.com" or "*.example.com") cover `name`?

    `name` may itself be a wildcard (a config listing "*.example.com" for SNI): only the same
    wildcard covers it, since "*.example.com" in a certificate covers every such name."""
    pattern, name = normalize(pattern), normalize(name)
    if pattern == name:
        return True
    if not pattern.startswith("*.") or name.startswith("*."):
        return False
    label, dot, rest = name.partition(".")
    return bool(label and dot and rest) and rest == pattern[2:]


class NameIndex(Generic[T]):
    """Server name -> the value (a certificate's context) listed for it; the first listed wins.

    Built once per set of certificates; `select` runs on every TLS handshake, so it does two
    dictionary lookups at most.
    """

    __slots__ = ("default", "exact", "wildcard")

    def __init__(self, entries: Sequence[tuple[Iterable[str], T]]) -> None:
        if not entries:
            raise ValueError("at least one certificate is needed")
        self.default: T = entries[0][1]
        self.exact: dict[str, T] = {}
        self.wildcard: dict[str, T] = {}  # "example.com" for "*.example.com"
        for names, value in entries:
            for name in names:
                name = normalize(name)
                if name.startswith("*."):
                    self.wildcard.setdefault(name[2:], value)
                else:
                    self.exact.setdefault(name, value)

    def select(self, server_name: str | None) -> T:
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        value = self.exact.get(name)
        if value is not None:
            return value
        _, dot, rest = name.partition(".")
        if dot:
            value = self.wildcard.get(rest)
            if value is not None:
                return value
        return self.default

    def __repr__(self) -> str:
        return f"<NameIndex exact={len(self.exact)} wildcard={len(self.wildcard)}>"

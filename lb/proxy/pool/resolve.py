"""Name resolution for server addresses: the event loop's getaddrinfo, or an override file.

`LB_RESOLVE_OVERRIDES` may name a hosts-like file, read again on every resolution, whose lines
are `NAME ADDRESS [ADDRESS...]` (`#` starts a comment). A name listed there resolves to those
addresses and never reaches DNS; other names do. It exists for tests and for pinning a name
without touching /etc/hosts; editing the file is a "DNS change" that the next resolution sees.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

OVERRIDES_ENV = "LB_RESOLVE_OVERRIDES"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def overrides() -> dict[str, list[str]]:
    """The override file's names and addresses (empty when unset or unreadable)."""
    path = os.environ.get(OVERRIDES_ENV)
    if not path:
        return {}
    table: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.split("#", 1)[0].split()
                if len(words) >= 2:
                    table[words[0].lower()] = words[1:]
    except OSError:
        return {}
    return table


async def resolve(host: str, port: int) -> list[str]:
    """The IP addresses `host` stands for, sorted and without repeats; OSError when none."""
    if is_ip(host):
        return [host]
    pinned = overrides().get(host.lower())
    if pinned is not None:
        return sorted(set(pinned))
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    found = sorted({str(info[4][0]) for info in infos})
    if not found:
        raise OSError(f"{host}: no addresses")
    return found

"""Cross-field checks on `listeners` (and the admin `bind`): a tcp or udp listener's pool,
the keys that only make sense in another mode, the SNI routes of tcp listeners, and binds
that would collide. Pure, like all of `lb.config.validate`: each check yields (path, message).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lb.config.base import split_address
from lb.config.listeners import Listener
from lb.config.problems import Loc, Skipped, format_path, unknown_name
from lb.config.schema import Config


def listener_problems(config: Config, skipped: Skipped) -> Iterator[tuple[Loc, str]]:
    if not config.listeners and not skipped.listeners and "listeners" not in skipped.sections:
        yield ("listeners",), "no listeners: define at least one, e.g. web: {bind: '0.0.0.0:8080'}"
    for name, listener in config.listeners.items():
        loc: Loc = ("listeners", name)
        yield from _l4_keys(config, listener, loc, skipped)
        if listener.mode == "http":
            if listener.pool is not None:
                yield (
                    (*loc, "pool"),
                    "only tcp and udp listeners take a pool; http listeners are served by routes",
                )
            continue
        if listener.pool is None:
            yield (*loc, "pool"), f"required: a {listener.mode} listener sends everything to a pool"
        elif listener.pool not in config.pools and not skipped.known("pool", listener.pool):
            yield (*loc, "pool"), unknown_name("pool", listener.pool, config.pools)
        for key in ("max_header_size", "underscores_in_headers"):
            if getattr(listener, key) is not None:
                yield (*loc, key), f"only for http listeners (this one is mode {listener.mode})"


_SNI_PATTERN = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?\.)*[a-z0-9_\-]+$")


def _l4_keys(
    config: Config, listener: Listener, loc: Loc, skipped: Skipped
) -> Iterator[tuple[Loc, str]]:
    """accept_proxy (tcp and http listeners) and SNI routes (tcp listeners only)."""
    if listener.accept_proxy and listener.mode == "udp":
        yield (*loc, "accept_proxy"), "only for tcp and http listeners (this one is mode udp)"
    if listener.routes is None:
        return
    if listener.mode != "tcp":
        hint = " (http listeners are served by the top-level routes)" * (listener.mode == "http")
        yield (
            (*loc, "routes"),
            f"only tcp listeners route by SNI (this one is mode {listener.mode}){hint}",
        )
        return
    if not listener.routes:
        yield (*loc, "routes"), "empty: omit routes to send everything to the listener's pool"
    seen: dict[str, int] = {}
    for k, route in enumerate(listener.routes):
        sni = route.match.sni.lower()
        if not _SNI_PATTERN.match(sni):
            yield (
                (*loc, "routes", k, "match", "sni"),
                f"{route.match.sni!r} is not a server name: use a.example.com or *.example.com",
            )
        elif sni in seen:
            yield (
                (*loc, "routes", k, "match", "sni"),
                f"unreachable: routes[{seen[sni]}] matches {route.match.sni!r} first",
            )
        seen.setdefault(sni, k)
        if route.pool not in config.pools and not skipped.known("pool", route.pool):
            yield (*loc, "routes", k, "pool"), unknown_name("pool", route.pool, config.pools)


# -- binds ------------------------------------------------------------------------------------

_WILDCARD_HOSTS = frozenset({"", "*", "0.0.0.0", "::"})


def bind_problems(config: Config) -> Iterator[tuple[Loc, str]]:
    """Two sockets of one protocol on one port collide when their hosts are equal, or either is
    a wildcard (0.0.0.0:P takes P on every address). Port 0 asks the kernel for a free port."""
    binds: list[tuple[Loc, str, str]] = [
        (("listeners", name, "bind"), listener.bind, "udp" if listener.mode == "udp" else "tcp")
        for name, listener in config.listeners.items()
    ]
    if config.admin is not None:
        binds.append((("admin", "bind"), config.admin.bind, "tcp"))
    taken: list[tuple[Loc, str, str, str, int]] = []
    for loc, bind, proto in binds:
        host, port = split_address(bind)
        host = host.lower()
        for other_loc, other_bind, other_proto, other_host, other_port in taken:
            if port == 0 or proto != other_proto or port != other_port:
                continue
            if host == other_host or host in _WILDCARD_HOSTS or other_host in _WILDCARD_HOSTS:
                owner = format_path(other_loc[:-1])
                yield loc, f"{bind!r} collides with {owner} ({other_bind!r})"
                break
        taken.append((loc, bind, proto, host, port))

"""What `lb.proxy.l4.tcp` and `lb.proxy.l4.udp` share: byte counting and the idle check.

Both relay in plain ints on the hot path (`bytes_in`, `bytes_out`) and, every IDLE_CHECK seconds,
`idle_check` counts those bytes for `lb_tcp_bytes_total` (udp sessions count there too; the
worker publishes them with its other metrics a few times a second) and ends a
connection or session that saw no byte either way for the listener's `timeouts.idle`.
"""

from __future__ import annotations

from typing import Any, Protocol

from lb.metrics import TCP_BYTES
from lb.proxy.listeners import ListenerSettings


class Relay(Protocol):
    """A relaying tcp connection or udp session, as the periodic check sees it."""

    listener: ListenerSettings
    bytes_in: int
    bytes_out: int
    checked: int
    last_active: float
    deadline: float


Address = tuple[str, int]

# While forwarding: how often the idle timeout is checked and byte counts reach the metrics.
IDLE_CHECK = 1.0

_bytes_children: dict[tuple[str, str], Any] = {}
# Bytes not yet in the metric, by (listener, direction): `publish_bytes` adds them a few times
# a second (the worker's metrics flush). A multiprocess counter's .inc() takes a lock and
# makes a getpid() system call, ~2% of a short tcp connection's CPU when done per connection.
_unpublished: dict[tuple[str, str], int] = {}


def count_bytes(listener: str, direction: str, n: int) -> None:
    key = (listener, direction)
    _unpublished[key] = _unpublished.get(key, 0) + n


def publish_bytes() -> None:
    """Add the bytes counted since the last call to `lb_tcp_bytes_total`."""
    for key, n in _unpublished.items():
        child = _bytes_children.get(key)
        if child is None:
            child = _bytes_children[key] = TCP_BYTES.labels(*key)
        child.inc(n)
    _unpublished.clear()


def flush_bytes(conn: Relay) -> None:
    """Add the bytes relayed since the last flush to `lb_tcp_bytes_total`; `checked` follows
    in the same units."""
    name = conn.listener.name
    if conn.bytes_in:
        count_bytes(name, "in", conn.bytes_in)
    if conn.bytes_out:
        count_bytes(name, "out", conn.bytes_out)
    conn.checked -= conn.bytes_in + conn.bytes_out
    conn.bytes_in = conn.bytes_out = 0


def idle_check(conn: Relay, now: float) -> bool:
    """The periodic check of a relaying connection (tcp) or session (udp): flush its byte
    counts; False when no byte went either way for the listener's `timeouts.idle` (the caller
    closes it), else True with the next check set."""
    flush_bytes(conn)
    total = conn.bytes_in + conn.bytes_out
    idle = conn.listener.timeouts.idle
    if total != conn.checked:
        conn.checked = total
        conn.last_active = now
    elif now - conn.last_active >= idle:
        return False
    conn.deadline = now + min(IDLE_CHECK, max(conn.last_active + idle - now, 0.01))
    return True

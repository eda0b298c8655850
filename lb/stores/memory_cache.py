"""CacheStore in this process: an LRU bounded by bytes, with TTLs and tags.

Invariants: `_bytes` is the sum of `_cost(key, entry)` over `_entries` and stays at or under
`max_bytes`; every key in `_tags[t]` has `t` among its entry's tags. Expired entries are
removed lazily, when read or when the LRU reaches them: no background task (a dead entry
still counts towards the bound until then, which only makes eviction come sooner).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from lb.stores.base import Invalidation, InvalidationCallback

# Per-entry bookkeeping (dict slot, tuple, floats) so that many tiny values still respect the
# bound roughly; the exact figure does not matter.
_OVERHEAD = 100


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float
    tags: tuple[str, ...]


class _Callbacks:
    def __init__(self, callbacks: list[InvalidationCallback], callback: InvalidationCallback):
        self._callbacks = callbacks
        self._callback = callback

    async def close(self) -> None:
        if self._callback in self._callbacks:
            self._callbacks.remove(self._callback)


class MemoryCacheStore:
    def __init__(
        self, max_bytes: int = 64 * 1024 * 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest use first
        self._tags: dict[str, set[str]] = {}
        self._bytes = 0
        self._locks: dict[str, tuple[str, float]] = {}  # key -> (token, expires_at)
        self._callbacks: list[InvalidationCallback] = []

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    async def set(self, key: str, value: bytes, ttl: float, tags: list[str] | None = None) -> None:
        self._remove(key)
        entry = _Entry(bytes(value), self._clock() + ttl, tuple(tags or ()))
        cost = _cost(key, entry)
        if ttl <= 0 or cost > self.max_bytes:
            return  # could never be served, or would evict everything else for one object
        while self._bytes + cost > self.max_bytes:
            self._remove(next(iter(self._entries)))
        self._entries[key] = entry
        self._bytes += cost
        for tag in entry.tags:
            self._tags.setdefault(tag, set()).add(key)

    async def delete(self, keys: list[str]) -> int:
        return self._purge([k for k in keys if k in self._entries])

    async def purge_prefix(self, prefix: str) -> int:
        return self._purge([k for k in self._entries if k.startswith(prefix)])

    async def purge_tag(self, tag: str) -> int:
        return self._purge(list(self._tags.get(tag, ())))

    async def purge_all(self) -> int:
        now = self._clock()
        count = sum(1 for e in self._entries.values() if e.expires_at > now)
        self._entries.clear()
        self._tags.clear()
        self._bytes = 0
        self._notify(Invalidation(everything=True))
        return count

    async def try_lock(self, key: str, lease: float) -> str | None:
        now = self._clock()
        held = self._locks.get(key)
        if held is not None and held[1] > now:
            return None
        if len(self._locks) > 1024:  # drop leases that ran out, so the dict stays small
            self._locks = {k: v for k, v in self._locks.items() if v[1] > now}
        token = secrets.token_hex(8)
        self._locks[key] = (token, now + lease)
        return token

    async def unlock(self, key: str, token: str) -> bool:
        held = self._locks.get(key)
        if held is None or held[0] != token or held[1] <= self._clock():
            return False
        del self._locks[key]
        return True

    async def publish_invalidation(self, invalidation: Invalidation) -> None:
        self._notify(invalidation)

    async def subscribe_invalidations(self, callback: InvalidationCallback) -> _Callbacks:
        self._callbacks.append(callback)
        return _Callbacks(self._callbacks, callback)

    # -- internals -----------------------------------------------------------------------------

    def _purge(self, keys: list[str]) -> int:
        """Remove `keys` (present ones), tell subscribers; how many were live."""
        now = self._clock()
        live = 0
        for key in keys:
            entry = self._remove(key)
            if entry is not None and entry.expires_at > now:
                live += 1
        if keys:
            self._notify(Invalidation(tuple(keys)))
        return live

    def _remove(self, key: str) -> _Entry | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._bytes -= _cost(key, entry)
        for tag in entry.tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._tags[tag]
        return entry

    def _notify(self, invalidation: Invalidation) -> None:
        for callback in list(self._callbacks):
            callback(invalidation)


def _cost(key: str, entry: _Entry) -> int:
    return len(entry.value) + len(key) + sum(len(t) for t in entry.tags) + _OVERHEAD

"""The cache's in-process tier: decoded entries by store key, LRU bounded by bytes, with
expiry and tags. Synchronous, so a hit costs no task and no await.

Without Redis it is the whole cache of a worker process; with Redis it is a small front tier
whose entries live at most `ttl` seconds (and are dropped when another worker or instance
changes them: lb.cache.cache subscribes to the store's invalidations).

A read moves its entry to the recent end at most once a second (`TOUCH_INTERVAL`, as
Varnish's lru_interval): a hot entry read thousands of times a second is then reordered once,
not per hit, and the order is the same to within that second.

Invariants: `bytes` is the sum of the sizes of `_entries`, at most `max_bytes`; every key in
`_tags[t]` is in `_entries` with tag `t`. Expired entries go when read or when the LRU
reaches them: no background sweep.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from lb.core.cache_entry import Entry

_OVERHEAD = 200  # bytes of bookkeeping per entry, roughly
TOUCH_INTERVAL = 1.0  # seconds between two moves of one entry to the recent end


class _Slot:
    __slots__ = ("entry", "expires", "size", "tags", "touched")

    def __init__(
        self, entry: Entry | bytes, expires: float, tags: tuple[str, ...], now: float
    ) -> None:
        self.entry = entry
        self.expires = expires
        self.touched = now  # when it last went to the recent end
        self.tags = tags
        self.size = (entry.size if isinstance(entry, Entry) else len(entry)) + _OVERHEAD


class LocalTier:
    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._clock = clock
        self._entries: OrderedDict[str, _Slot] = OrderedDict()  # least recently used first
        self._tags: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | bytes | None:
        """An entry, a variants record (bytes), or None."""
        slot = self._entries.get(key)
        if slot is None:
            return None
        now = self._clock()
        if slot.expires <= now:
            self._remove(key)
            return None
        if now - slot.touched >= TOUCH_INTERVAL:
            slot.touched = now
            self._entries.move_to_end(key)
        return slot.entry

    def set(self, key: str, entry: Entry | bytes, ttl: float, tags: Iterable[str] = ()) -> None:
        self._remove(key)
        now = self._clock()
        slot = _Slot(entry, now + ttl, tuple(tags), now)
        if ttl <= 0 or slot.size > self.max_bytes // 4:
            return  # never servable, or one object would push out a quarter of the tier
        while self.bytes + slot.size > self.max_bytes:
            self._remove(next(iter(self._entries)))
        self._entries[key] = slot
        self.bytes += slot.size
        for tag in slot.tags:
            self._tags.setdefault(tag, set()).add(key)

    def drop(self, keys: Iterable[str]) -> int:
        return sum(1 for key in keys if self._remove(key) is not None)

    def drop_prefix(self, prefix: str) -> int:
        return self.drop([k for k in self._entries if k.startswith(prefix)])

    def drop_tag(self, tag: str) -> int:
        return self.drop(list(self._tags.get(tag, ())))

    def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self._tags.clear()
        self.bytes = 0
        return count

    def _remove(self, key: str) -> _Slot | None:
        slot = self._entries.pop(key, None)
        if slot is None:
            return None
        self.bytes -= slot.size
        for tag in slot.tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._tags[tag]
        return slot

    def __repr__(self) -> str:
        return f"<LocalTier {len(self._entries)} entries {self.bytes}/{self.max_bytes} bytes>"

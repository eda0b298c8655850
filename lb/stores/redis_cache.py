"""CacheStore on Redis, shared by every worker and every lb using the same server.

Layout, under the configured `key_prefix` P:
  P c:v:{key}  the value (a string with a PX expiry)
  P c:t:{tag}  a set of the keys stored with that tag; it expires with its longest-lived key
  P c:l:{key}  a lock's token (SET NX PX: the lease ends it if its holder dies)
  P c:inv      the pub/sub channel of invalidations: JSON {"keys": [...]} or {"all": true}

A tag set may name keys that have since expired or been stored again without the tag: a purge
by tag then counts only the values it really removed, and may remove a re-stored value too
(a cache erring towards a miss). Purges by prefix walk the keyspace with SCAN, one page per
call, so no single call holds Redis for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import Any

from redis.asyncio import Redis

from lb.stores.base import Invalidation, InvalidationCallback
from lb.stores.errors import StoreUnavailable
from lb.stores.redis_client import RedisConnection, is_unavailable

log = logging.getLogger(__name__)

_SET = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[3])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
"""
# KEYS[1] the tag set; ARGV[1] the value-key prefix. Returns the keys whose value it removed.
_PURGE_TAG = """
local removed = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('UNLINK', ARGV[1] .. key) == 1 then removed[#removed + 1] = key end
end
redis.call('UNLINK', KEYS[1])
return removed
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_SCAN_PAGE = 500


class RedisCacheStore:
    def __init__(self, connection: RedisConnection) -> None:
        self._conn = connection
        p = connection.prefix
        self._value_prefix = f"{p}c:v:"
        self._tag_prefix = f"{p}c:t:"
        self._lock_prefix = f"{p}c:l:"
        self.channel = f"{p}c:inv"
        client = connection.client
        # redis-py's Script runs EVALSHA and falls back to EVAL (loading it) on NOSCRIPT.
        self._set_script = client.register_script(_SET)
        self._purge_tag_script = client.register_script(_PURGE_TAG)
        self._unlock_script = client.register_script(_UNLOCK)

    async def get(self, key: str) -> bytes | None:
        value: Any = await self._conn.call(lambda r: r.get(self._value_prefix + key))
        return value  # bytes (the client does not decode responses) or None

    async def set(self, key: str, value: bytes, ttl: float, tags: list[str] | None = None) -> None:
        ttl_ms = int(ttl * 1000)
        if ttl_ms <= 0:
            return
        keys = [self._value_prefix + key] + [self._tag_prefix + t for t in tags or ()]
        await self._conn.call(
            lambda r: self._set_script(keys=keys, args=[value, ttl_ms, key], client=r)
        )

    async def delete(self, keys: list[str]) -> int:
        if not keys:
            return 0
        names = [self._value_prefix + k for k in keys]
        count = int(await self._conn.call(lambda r: r.unlink(*names)))
        await self._publish_quietly(Invalidation(tuple(keys)))
        return count

    async def purge_prefix(self, prefix: str) -> int:
        return await self._purge_matching(self._value_prefix + _glob_escape(prefix) + "*")

    async def purge_tag(self, tag: str) -> int:
        removed = await self._conn.call(
            lambda r: self._purge_tag_script(
                keys=[self._tag_prefix + tag], args=[self._value_prefix], client=r
            )
        )
        keys = tuple(_text(k) for k in removed)
        if keys:
            await self._publish_quietly(Invalidation(keys))
        return len(keys)

    async def purge_all(self) -> int:
        count = await self._purge_matching(self._value_prefix + "*", publish=False)
        await self._purge_matching(self._tag_prefix + "*", publish=False)
        await self._publish_quietly(Invalidation(everything=True))
        return count

    async def try_lock(self, key: str, lease: float) -> str | None:
        token = secrets.token_hex(8)
        lease_ms = max(1, int(lease * 1000))
        name = self._lock_prefix + key
        taken = await self._conn.call(lambda r: r.set(name, token, nx=True, px=lease_ms))
        return token if taken else None

    async def unlock(self, key: str, token: str) -> bool:
        name = self._lock_prefix + key
        released = await self._conn.call(
            lambda r: self._unlock_script(keys=[name], args=[token], client=r)
        )
        return bool(released)

    async def publish_invalidation(self, invalidation: Invalidation) -> None:
        message = _encode(invalidation)
        await self._conn.call(lambda r: r.publish(self.channel, message))

    async def subscribe_invalidations(self, callback: InvalidationCallback) -> _ChannelSubscription:
        subscription = _ChannelSubscription(self._conn, self.channel, callback)
        await subscription.start()
        return subscription

    # -- internals -----------------------------------------------------------------------------

    async def _purge_matching(self, pattern: str, publish: bool = True) -> int:
        """UNLINK every key matching `pattern`, a SCAN page per call; how many."""
        cursor: int = 0
        count = 0
        while True:

            async def page(r: Redis, cursor: int = cursor) -> tuple[int, list[Any], int]:
                next_cursor, names = await r.scan(cursor, match=pattern, count=_SCAN_PAGE)
                removed = int(await r.unlink(*names)) if names else 0
                return int(next_cursor), names, removed

            cursor, names, removed = await self._conn.call(page)
            count += removed
            if publish and names:
                start = len(self._value_prefix)
                await self._publish_quietly(Invalidation(tuple(_text(n)[start:] for n in names)))
            if cursor == 0:
                return count

    async def _publish_quietly(self, invalidation: Invalidation) -> None:
        """The removal happened; a lost notice only leaves other tiers stale until their own
        TTL, so it does not turn the removal into an error."""
        with contextlib.suppress(StoreUnavailable):
            await self.publish_invalidation(invalidation)


class _ChannelSubscription:
    """A task holding a SUBSCRIBE on its own connection, resubscribing after Redis returns.
    After a lost subscription it calls back with `everything` once: messages were missed."""

    def __init__(
        self, connection: RedisConnection, channel: str, callback: InvalidationCallback
    ) -> None:
        self._conn = connection
        self._channel = channel
        self._callback = callback
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        # Usually subscribed when this returns; with Redis down, the task keeps trying.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._conn.timeout):
                await self._subscribed.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        lost = False
        watched: Any = None
        while True:
            if not await self._conn.wait_up(self._conn.settings.probe_interval):
                continue
            pubsub = self._conn.client.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(self._conn.timeout):
                    await pubsub.subscribe(self._channel)
                # redis-py reconnects and resubscribes a pubsub by itself when Redis comes back
                # quickly, without raising: hear of that too, or missed messages go unnoticed.
                watched = pubsub.connection
                watched.register_connect_callback(self._reconnected)
                self._subscribed.set()
                if lost:
                    self._deliver(Invalidation(everything=True))
                    lost = False
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._deliver(_decode(message["data"]))
            except Exception as e:
                if not (isinstance(e, TimeoutError) or is_unavailable(e)):
                    log.exception("redis invalidation listener failed; subscribing again")
                    await asyncio.sleep(self._conn.settings.probe_interval)
                else:
                    self._conn.mark_down(str(e) or type(e).__name__)
                lost = True
            finally:
                if watched is not None:  # pooled after this: its next reconnect is not ours
                    watched.deregister_connect_callback(self._reconnected)
                    watched = None
                with contextlib.suppress(Exception):
                    await _close_pubsub(pubsub)

    def _reconnected(self, _connection: Any) -> None:
        log.warning("redis invalidation listener reconnected; dropping the in-process tier")
        self._deliver(Invalidation(everything=True))

    def _deliver(self, invalidation: Invalidation) -> None:
        try:
            self._callback(invalidation)
        except Exception:
            log.exception("invalidation callback failed")


async def _close_pubsub(pubsub: Any) -> None:
    closer = getattr(pubsub, "aclose", None) or pubsub.reset
    await closer()


def _encode(invalidation: Invalidation) -> str:
    if invalidation.everything:
        return json.dumps({"all": True})
    return json.dumps({"keys": list(invalidation.keys)})


def _decode(data: bytes | str) -> Invalidation:
    try:
        body = json.loads(data)
        if body.get("all"):
            return Invalidation(everything=True)
        return Invalidation(tuple(str(k) for k in body.get("keys", ())))
    except (ValueError, AttributeError):  # not ours: drop everything rather than guess
        return Invalidation(everything=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    """`prefix` literally in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

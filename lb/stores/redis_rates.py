"""RateCounter on Redis: GCRA (lb.core.gcra) as one Lua script, on the server's clock.

One EVALSHA per decision (redis-py's Script falls back to EVAL on NOSCRIPT, e.g. after a
restart), so the read-decide-write is atomic across every process, and clocks of different
lb hosts never disagree: time is Redis's TIME. The arithmetic is in integer microseconds
(exact in a Lua double up to 2^53) and mirrors `gcra` line for line; the key expires when
its bucket is full again, so idle keys cost nothing.

Returns {allowed, remaining, retry_after_us, reset_us}; cost > burst is denied for good.
"""

from __future__ import annotations

import math
from typing import Any

from lb.core.gcra import RateDecision
from lb.stores.redis_client import RedisConnection

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local limit = burst * interval
local tat = tonumber(redis.call('GET', KEYS[1]))
local base = now
if tat and tat > now then base = tat end
local function remaining(at)
  local r = math.floor((limit - (at - now)) / interval + 1e-9)
  if r < 0 then return 0 end
  return r
end
if cost > burst then return {0, remaining(base), -1, base - now} end
local new_tat = base + cost * interval
if new_tat - now <= limit + 1 then
  if new_tat > now then
    redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
      math.ceil((new_tat - now) / 1000))
  end
  return {1, remaining(new_tat), 0, new_tat - now}
end
return {0, remaining(base), new_tat - now - limit, base - now}
"""


class RedisRateCounter:
    def __init__(self, connection: RedisConnection) -> None:
        self._conn = connection
        self._prefix = f"{connection.prefix}r:"
        self._script = connection.client.register_script(_GCRA)

    async def acquire(
        self, key: str, rate_per_second: float, burst: int, cost: int = 1
    ) -> RateDecision:
        if rate_per_second <= 0 or burst < 1 or cost < 0:
            raise ValueError("rate_per_second must be > 0, burst >= 1, cost >= 0")
        interval_us = 1_000_000 / rate_per_second
        args: list[Any] = [repr(interval_us), burst, cost]
        name = self._prefix + key
        allowed, remaining, retry_us, reset_us = await self._conn.call(
            lambda r: self._script(keys=[name], args=args, client=r)
        )
        retry_after = math.inf if retry_us < 0 else retry_us / 1e6
        return RateDecision(bool(allowed), int(remaining), retry_after, reset_us / 1e6)

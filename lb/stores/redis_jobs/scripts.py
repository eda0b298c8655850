"""The Lua scripts of the Redis job queue: every change of a job's state is one of them.

A script runs atomically on the server, on the server's clock (`TIME`), so no two lb or worker
processes ever see a job half moved, and no process's clock matters. Each script lists the
KEYS and ARGV it takes (lb.stores.redis_jobs.queue passes them) and what it returns. The
bodies are loaded once and run by EVALSHA (redis-py falls back to EVAL on NOSCRIPT, e.g. after
a restart of the server).

Invariants they keep: the stream's length (XLEN; acknowledged entries are deleted) plus the
`later` set's size is the jobs waiting or in flight, what `max_length` bounds; a job's record
holds `msg` exactly while the job has an entry in the stream (queued or running); a result is
written before its delivery is acknowledged, in the same script.
"""

from __future__ import annotations

_NOW = """
local function now()
  local t = redis.call('TIME')
  return string.format('%d.%06d', t[1], t[2])
end
"""
# KEYS: stream, job, idempotency, later; ARGV: max_length, id, payload, idem_ttl_ms, has_idem,
# queue, fingerprint, owner
ENQUEUE = (
    _NOW
    + """
if ARGV[5] == '1' then
  local known = redis.call('GET', KEYS[3])
  if known then return {0, known} end
end
-- The same call again (redis-py sends a command once more when the connection broke before
-- its reply came): the job is stored already, never queued twice.
if redis.call('EXISTS', KEYS[2]) == 1 then return {1, ARGV[2]} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'lb', '0', 'MKSTREAM')
end
local length = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[4])
if length >= tonumber(ARGV[1]) then return {-1, ''} end
local msg = redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'payload', ARGV[3])
local t = now()
redis.call('HSET', KEYS[2], 'queue', ARGV[6], 'status', 'queued', 'attempt', 0,
  'created', t, 'updated', t, 'msg', msg)
if ARGV[8] ~= '' then redis.call('HSET', KEYS[2], 'owner', ARGV[8]) end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], ARGV[2] .. '|' .. ARGV[7], 'PX', ARGV[4])
end
return {1, ARGV[2]}
"""
)
# A delivery arrived: run it, or drop it (cancelled, finished), or bury it (out of attempts).
# KEYS: stream, job, dead; ARGV: msg, max_attempts, reason if buried, result_ttl_ms, id,
# payload. Returns {1, attempt} to run, {0, 0} dropped, {-1, attempt} buried.
START = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[2], 'status')
if (not status) or status == 'cancelled' or status == 'done' or status == 'failed' then
  redis.call('XACK', KEYS[1], 'lb', ARGV[1])
  redis.call('XDEL', KEYS[1], ARGV[1])
  return {0, 0}
end
local attempt = tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0') + 1
if attempt > tonumber(ARGV[2]) then
  redis.call('XADD', KEYS[3], '*', 'id', ARGV[5], 'payload', ARGV[6], 'reason', ARGV[3])
  redis.call('HSET', KEYS[2], 'status', 'failed', 'reason', ARGV[3], 'updated', now())
  redis.call('HDEL', KEYS[2], 'msg')
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('XACK', KEYS[1], 'lb', ARGV[1])
  redis.call('XDEL', KEYS[1], ARGV[1])
  return {-1, attempt - 1}
end
redis.call('HSET', KEYS[2], 'status', 'running', 'attempt', attempt, 'updated', now())
return {1, attempt}
"""
)
# KEYS: stream, job; ARGV: msg, result, result_ttl_ms, queue. The result first, then the ack.
COMPLETE = (
    _NOW
    + """
redis.call('HSET', KEYS[2], 'queue', ARGV[4], 'status', 'done', 'result', ARGV[2],
  'updated', now())
redis.call('HDEL', KEYS[2], 'msg', 'reason')
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('XACK', KEYS[1], 'lb', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
"""
)
# KEYS: stream, job, dead, later; ARGV: msg, reason, retry, max_attempts, result_ttl_ms, id,
# payload, delay_ms (0: queued again at once)
FAIL = (
    _NOW
    + """
if redis.call('XACK', KEYS[1], 'lb', ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
local attempt = tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0')
if ARGV[3] == '1' and attempt < tonumber(ARGV[4]) and tonumber(ARGV[8]) > 0 then
  local t = redis.call('TIME')
  local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[8])
  redis.call('ZADD', KEYS[4], due, ARGV[6])
  redis.call('HSET', KEYS[2], 'status', 'retrying', 'reason', ARGV[2], 'updated', now(),
    'payload', ARGV[7])
  redis.call('HDEL', KEYS[2], 'msg')
  return 1
end
if ARGV[3] == '1' and attempt < tonumber(ARGV[4]) then
  local msg = redis.call('XADD', KEYS[1], '*', 'id', ARGV[6], 'payload', ARGV[7])
  redis.call('HSET', KEYS[2], 'status', 'retrying', 'reason', ARGV[2], 'updated', now(),
    'msg', msg)
  return 1
end
redis.call('XADD', KEYS[3], '*', 'id', ARGV[6], 'payload', ARGV[7], 'reason', ARGV[2])
redis.call('HSET', KEYS[2], 'status', 'failed', 'reason', ARGV[2], 'updated', now())
redis.call('HDEL', KEYS[2], 'msg')
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 2
"""
)
# KEYS: job; ARGV: key prefix, result_ttl_ms, id
CANCEL = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'retrying' then return 0 end
local msg = redis.call('HGET', KEYS[1], 'msg')
local stream = ARGV[1] .. 'q:' .. redis.call('HGET', KEYS[1], 'queue')
if msg then
  redis.call('XACK', stream, 'lb', msg)
  redis.call('XDEL', stream, msg)
end
redis.call('ZREM', stream .. ':later', ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated', now())
redis.call('HDEL', KEYS[1], 'msg', 'payload')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
# KEYS: stream, dead; ARGV: key prefix, queue, batch. Returns how many it moved.
REPLAY = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'lb', '0', 'MKSTREAM')
end
local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', ARGV[3])
local t = now()
for _, entry in ipairs(entries) do
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  local msg = redis.call('XADD', KEYS[1], '*', 'id', f['id'], 'payload', f['payload'])
  local job = ARGV[1] .. 'j:' .. f['id']
  redis.call('HSETNX', job, 'created', t)
  redis.call('HSET', job, 'queue', ARGV[2], 'status', 'queued', 'attempt', 0, 'updated', t,
    'msg', msg)
  redis.call('HDEL', job, 'reason', 'result')
  redis.call('PERSIST', job)
  redis.call('XDEL', KEYS[2], entry[1])
end
return #entries
"""
)
# Retries whose backoff is over go back to the stream. KEYS: stream, later; ARGV: key prefix,
# batch. Returns how many it moved.
PROMOTE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  local job = ARGV[1] .. 'j:' .. id
  redis.call('ZREM', KEYS[2], id)
  if redis.call('HGET', job, 'status') == 'retrying' then
    local payload = redis.call('HGET', job, 'payload') or ''
    local msg = redis.call('XADD', KEYS[1], '*', 'id', id, 'payload', payload)
    redis.call('HSET', job, 'msg', msg)
    redis.call('HDEL', job, 'payload')
  end
end
return #due
"""
# KEYS: stream, dead, later. Returns {depth, in flight, oldest age ms (-1: none), dead}.
STATS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local depth, pending, oldest = 0, 0, -1
if redis.call('EXISTS', KEYS[1]) == 1 then
  local ok, summary = pcall(redis.call, 'XPENDING', KEYS[1], 'lb')
  if ok then pending = summary[1] end
  depth = redis.call('XLEN', KEYS[1]) - pending
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #first > 0 then
    oldest = now_ms - tonumber(string.match(first[1][1], '^(%d+)'))
  end
end
depth = depth + redis.call('ZCARD', KEYS[3])
return {depth, pending, oldest, redis.call('XLEN', KEYS[2])}
"""

"""JobQueue on Redis Streams: durable (with the server's AOF), shared by every lb and worker.

Layout, under the configured `key_prefix` P:
  P q:{queue}        a stream of jobs waiting or in flight, entries {id, payload}; one consumer
                     group, `lb`, whose pending list (PEL) is the jobs in flight
  P q:{queue}:dead   the dead letters, entries {id, payload, reason}
  P q:{queue}:later  retries waiting out their backoff: a sorted set of job ids by due time
                     (ms, the server's clock); the job's payload waits in its record meanwhile,
                     and `claim` moves due ones back to the stream first
  P j:{id}           the job's record, a hash {queue, status, attempt, reason, result, created,
                     updated, msg (its stream entry while queued)}; it expires `result_ttl`
                     after the job finished, was cancelled or died
  P i:{queue}:{key}  idempotency key -> "{job id}|{fingerprint}" (`idempotency_ttl`)

Every change of state is one Lua script (lb.stores.redis_jobs.scripts: atomic, on the
server's clock): enqueue checks `max_length` (XLEN: acknowledged entries are deleted, so it
counts waiting and in flight) before XADD; `complete` writes the result, then XACKs and
deletes the entry, in that order, in one script; a delivery idle for `ack_timeout` is taken
over by the next `claim` (XAUTOCLAIM) and counts as a new attempt. RedisJobQueue
(lb.stores.redis_jobs.queue) passes them their keys and arguments, and waits for deliveries.
"""

from lb.stores.redis_jobs.queue import RedisJobQueue

__all__ = ["RedisJobQueue"]

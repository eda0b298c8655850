"""JobQueue in a directory: shared by the worker processes of one `lb run` on one machine.

Without `redis:`, the supervisor makes `{run_dir}/jobs` and names it to its workers in
`LB_JOBS_DIR` (lb.stores.bundle); every worker (and the supervisor, for the admin API and the
`lb_queue_*` gauges) opens the same directory, so a job URL answers on any worker's connection.

Layout, under the root R, and the module that owns each part:
  R/jobs/{id}.json, R/jobs/{id}.result   a job's record and its stored response   (records)
  R/expiry/{when}.{rand}     what to remove once due: a record, an idempotency key   (records)
  R/q/{queue}/queued|running|delayed|dead/...   a ticket per job, holding its payload; where
                             it is says the job's state, and who renamed it there owns it  (tickets)
  R/idem/{queue}/{sha256(key)}   an idempotency key, made with O_EXCL               (idempotency)
The queue operations that combine them are in `queue` (FileJobQueue); the file operations
they are made of, and the races each one settles, in `files`.

Expiry. Finished records and idempotency keys carry their expiry: `get` and `enqueue` treat an
expired one as absent (and remove it); `sweep` (the supervisor calls it every few seconds)
removes the ones nobody asked for, from the due markers in R/expiry, reading nothing else.

Durability. No fsync, under /tmp: the jobs live as long as the `lb run` that owns the
directory. An OSError other than the expected races (ENOENT, EEXIST) raises StoreUnavailable
(e.g. the disk is full), so offload answers 503 queue_unavailable.
"""

from lb.stores.file_jobs.queue import FileJobQueue

JOBS_DIR_ENV = "LB_JOBS_DIR"  # set by the supervisor of `lb run` for its workers

__all__ = ["JOBS_DIR_ENV", "FileJobQueue"]

"""What every JobQueue (in this process, in a directory, on Redis) decides the same way.

A job's id, the answer to a repeated Idempotency-Key, the reason a job dies when its workers
keep going silent on it, and which states a job can still be cancelled from: one definition
here, so the three implementations cannot drift apart (tests/stores/test_jobs.py runs the same
cases on all of them).
"""

from __future__ import annotations

import secrets

from lb.stores.base import Enqueued, JobStatus, QueuePolicy

# A job that no worker has started: `cancel` may still remove it.
WAITING = (JobStatus.QUEUED, JobStatus.RETRYING)


def new_job_id() -> str:
    """128 random bits, as hex: a job URL is its only secret."""
    return secrets.token_hex(16)


def repeated(job_id: str, known_fingerprint: str, fingerprint: str) -> Enqueued:
    """The answer to an Idempotency-Key seen before: that job, in conflict when it was queued
    for another request (method, target or body)."""
    return Enqueued(job_id, created=False, conflict=known_fingerprint != fingerprint)


def silent_reason(policy: QueuePolicy) -> str:
    """Why a job is dead when it ran out of attempts with no worker acknowledging it."""
    return f"no acknowledgement within {policy.ack_timeout:g}s"

"""JobQueue, in-process and on Redis Streams: what queue offload will rely on."""

from __future__ import annotations

import asyncio

import pytest

from lb.config.redis import Redis as RedisSettings
from lb.stores.base import JobQueue, JobStatus, QueuePolicy
from lb.stores.errors import QueueFull
from lb.stores.redis_client import RedisConnection
from lb.stores.redis_jobs import RedisJobQueue
from tests.conftest import RedisServer
from tests.stores.helpers import until

POLICY = QueuePolicy(max_length=10, max_attempts=3, ack_timeout=30, result_ttl=60)


async def status(jobs: JobQueue, job_id: str) -> JobStatus | None:
    record = await jobs.get(job_id)
    return record.status if record else None


async def test_a_job_runs_and_its_result_is_kept_then_expires(jobs: JobQueue) -> None:
    policy = QueuePolicy(result_ttl=0.3)
    queued = await jobs.enqueue("reports", b"GET /reports/1", policy)
    assert queued.created
    record = await jobs.get(queued.id)
    assert record is not None and record.status is JobStatus.QUEUED and record.attempt == 0
    assert record.queue == "reports" and record.created_at > 0

    job = await jobs.claim("reports", "worker-1", policy, block=1)
    assert job is not None
    assert (job.id, job.payload, job.attempt) == (queued.id, b"GET /reports/1", 1)
    assert await status(jobs, job.id) is JobStatus.RUNNING

    await jobs.complete(job, b"HTTP/1.1 200 OK\r\n\r\n", policy)
    record = await jobs.get(job.id)
    assert record is not None and record.status is JobStatus.DONE
    assert record.result == b"HTTP/1.1 200 OK\r\n\r\n"
    assert (await jobs.stats("reports")).depth == 0

    async def expired() -> bool:
        return await jobs.get(job.id) is None

    await until(expired)
    assert await jobs.claim("reports", "worker-1", policy, block=0.05) is None


async def test_queue_full_counts_waiting_and_in_flight(jobs: JobQueue) -> None:
    policy = QueuePolicy(max_length=2)
    await jobs.enqueue("q", b"1", policy)
    await jobs.enqueue("q", b"2", policy)
    with pytest.raises(QueueFull):
        await jobs.enqueue("q", b"3", policy)
    job = await jobs.claim("q", "w", policy, block=1)
    assert job is not None
    with pytest.raises(QueueFull):  # the claimed one is still in flight
        await jobs.enqueue("q", b"3", policy)
    await jobs.complete(job, b"", policy)
    await jobs.enqueue("q", b"3", policy)
    await jobs.enqueue("other", b"1", policy)  # each queue has its own bound


async def test_an_idempotency_key_maps_to_one_job(jobs: JobQueue) -> None:
    first = await jobs.enqueue("q", b"POST /pay", POLICY, idempotency_key="abc")
    again = await jobs.enqueue("q", b"POST /pay", POLICY, idempotency_key="abc")
    other = await jobs.enqueue("q", b"POST /pay", POLICY, idempotency_key="xyz")
    assert again.id == first.id and not again.created
    assert other.id != first.id and other.created
    assert (await jobs.stats("q")).depth == 2


async def test_idempotency_key_expires(jobs: JobQueue) -> None:
    policy = QueuePolicy(idempotency_ttl=0.2)
    first = await jobs.enqueue("q", b"x", policy, idempotency_key="k")

    async def new_job() -> bool:
        return (await jobs.enqueue("q", b"x", policy, idempotency_key="k")).id != first.id

    await until(new_job)


async def test_a_silent_workers_job_goes_to_another_worker(jobs: JobQueue) -> None:
    policy = QueuePolicy(ack_timeout=0.3)
    queued = await jobs.enqueue("q", b"work", policy)
    lost = await jobs.claim("q", "worker-that-dies", policy, block=1)
    assert lost is not None and lost.attempt == 1
    assert await jobs.claim("q", "worker-2", policy, block=0) is None  # not silent long enough
    taken = await jobs.claim("q", "worker-2", policy, block=5)
    assert taken is not None
    assert (taken.id, taken.payload, taken.attempt) == (queued.id, b"work", 2)
    await jobs.complete(taken, b"ok", policy)
    record = await jobs.get(queued.id)
    assert record is not None and record.status is JobStatus.DONE and record.attempt == 2


async def test_a_job_whose_workers_keep_dying_goes_to_the_dead_letters(jobs: JobQueue) -> None:
    policy = QueuePolicy(ack_timeout=0.2, max_attempts=1)
    queued = await jobs.enqueue("q", b"poison", policy)
    assert await jobs.claim("q", "w1", policy, block=1) is not None
    # w2 waits past the ack timeout (generous: the reclaim polls, and may run under load).
    assert await jobs.claim("q", "w2", policy, block=3) is None
    record = await jobs.get(queued.id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.reason == "no acknowledgement within 0.2s"
    assert (await jobs.stats("q")).dead == 1


async def test_retry_then_dead_letter_then_replay(jobs: JobQueue) -> None:
    policy = QueuePolicy(max_attempts=2)
    queued = await jobs.enqueue("q", b"flaky", policy)
    job = await jobs.claim("q", "w", policy, block=1)
    assert job is not None
    await jobs.fail(job, "backend answered 503", policy)
    record = await jobs.get(queued.id)
    assert record is not None
    assert (record.status, record.attempt, record.reason) == (
        JobStatus.RETRYING,
        1,
        "backend answered 503",
    )
    job = await jobs.claim("q", "w", policy, block=1)
    assert job is not None and job.attempt == 2
    await jobs.fail(job, "backend answered 503 again", policy)  # out of attempts
    record = await jobs.get(queued.id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.reason == "backend answered 503 again"
    stats = await jobs.stats("q")
    assert (stats.depth, stats.in_flight, stats.dead) == (0, 0, 1)

    assert await jobs.replay_dead("q") == 1
    assert await jobs.replay_dead("q") == 0
    assert await status(jobs, queued.id) is JobStatus.QUEUED
    job = await jobs.claim("q", "w", policy, block=1)
    assert job is not None and job.payload == b"flaky" and job.attempt == 1
    await jobs.fail(job, "a bug", policy, retry=False)  # no retry asked: dead at once
    assert (await jobs.stats("q")).dead == 1


async def test_cancel_a_queued_job(jobs: JobQueue) -> None:
    cancelled = await jobs.enqueue("q", b"a", POLICY)
    running = await jobs.enqueue("q", b"b", POLICY)
    assert await jobs.cancel(cancelled.id, POLICY)
    assert await status(jobs, cancelled.id) is JobStatus.CANCELLED
    assert (await jobs.stats("q")).depth == 1
    job = await jobs.claim("q", "w", POLICY, block=1)
    assert job is not None and job.id == running.id  # the cancelled one is never run
    assert not await jobs.cancel(running.id, POLICY)  # already running
    assert not await jobs.cancel(cancelled.id, POLICY)
    assert not await jobs.cancel("no-such-job", POLICY)
    assert await jobs.get("no-such-job") is None


async def test_stats(jobs: JobQueue) -> None:
    empty = await jobs.stats("nothing-yet")
    assert (empty.depth, empty.in_flight, empty.oldest_age, empty.dead) == (0, 0, 0.0, 0)
    for i in range(3):
        await jobs.enqueue("q", str(i).encode(), POLICY)
    job = await jobs.claim("q", "w", POLICY, block=1)
    assert job is not None

    async def aged() -> bool:
        return (await jobs.stats("q")).oldest_age >= 0.05

    await until(aged)
    stats = await jobs.stats("q")
    assert (stats.depth, stats.in_flight, stats.dead) == (2, 1, 0)
    assert stats.oldest_age < 5


async def test_a_waiting_worker_gets_a_job_as_soon_as_it_is_queued(jobs: JobQueue) -> None:
    claim = asyncio.ensure_future(jobs.claim("q", "w", POLICY, block=5))
    await asyncio.sleep(0.05)  # let the worker start waiting (correctness does not depend on it)
    queued = await jobs.enqueue("q", b"now", POLICY)
    job = await asyncio.wait_for(claim, 5)
    assert job is not None and job.id == queued.id


async def test_jobs_survive_a_redis_restart_with_appendonly(
    redis_server_durable: RedisServer,
) -> None:
    settings = RedisSettings.model_validate(
        {"url": redis_server_durable.url, "probe_interval": "100ms"}
    )
    connection = RedisConnection(settings)
    jobs = RedisJobQueue(connection)
    try:
        queued = await jobs.enqueue("q", b"keep me", POLICY, idempotency_key="k")
        redis_server_durable.stop()
        redis_server_durable.start()
        await until(lambda: _up(connection), timeout=10)
        job = await jobs.claim("q", "w", POLICY, block=1)
        assert job is not None and (job.id, job.payload) == (queued.id, b"keep me")
        again = await jobs.enqueue("q", b"keep me", POLICY, idempotency_key="k")
        assert again.id == queued.id
    finally:
        await connection.aclose()


async def _up(connection: RedisConnection) -> bool:
    try:
        await connection.call(lambda r: r.ping())
    except Exception:
        return False
    return True


async def test_a_retry_with_a_delay_waits_it_out(jobs: JobQueue) -> None:
    policy = QueuePolicy(max_attempts=3)
    queued = await jobs.enqueue("q", b"later", policy)
    job = await jobs.claim("q", "w", policy, block=1)
    assert job is not None
    await jobs.fail(job, "backend answered 503", policy, delay=0.3)
    record = await jobs.get(queued.id)
    assert record is not None and record.status is JobStatus.RETRYING
    assert (await jobs.stats("q")).depth == 1  # waiting out its backoff counts as waiting
    assert await jobs.claim("q", "w", policy, block=0) is None  # not due yet
    again = await jobs.claim("q", "w", policy, block=5)
    assert again is not None
    assert (again.id, again.payload, again.attempt) == (queued.id, b"later", 2)


async def test_a_delayed_retry_can_be_cancelled(jobs: JobQueue) -> None:
    policy = QueuePolicy(max_attempts=3)
    queued = await jobs.enqueue("q", b"later", policy)
    job = await jobs.claim("q", "w", policy, block=1)
    assert job is not None
    await jobs.fail(job, "503", policy, delay=0.1)
    assert await jobs.cancel(queued.id, policy)
    assert await jobs.claim("q", "w", policy, block=0.4) is None
    assert await status(jobs, queued.id) is JobStatus.CANCELLED


async def test_an_idempotency_key_reused_for_another_request_conflicts(jobs: JobQueue) -> None:
    first = await jobs.enqueue("q", b"a", POLICY, idempotency_key="k", fingerprint="f1")
    same = await jobs.enqueue("q", b"a", POLICY, idempotency_key="k", fingerprint="f1")
    other = await jobs.enqueue("q", b"b", POLICY, idempotency_key="k", fingerprint="f2")
    assert same.id == first.id and not same.created and not same.conflict
    assert other.id == first.id and not other.created and other.conflict
    assert (await jobs.stats("q")).depth == 1


async def test_the_owner_is_kept_on_the_record(jobs: JobQueue) -> None:
    mine = await jobs.enqueue("q", b"a", POLICY, owner="h1")
    anyone = await jobs.enqueue("q", b"b", POLICY)
    record = await jobs.get(mine.id)
    assert record is not None and record.owner == "h1"
    record = await jobs.get(anyone.id)
    assert record is not None and record.owner is None

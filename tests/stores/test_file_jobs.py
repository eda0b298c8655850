"""FileJobQueue beyond the JobQueue tests (tests/stores/test_jobs.py runs those on it too):
several processes on one directory, a claimer that died, expiry swept, and a full disk."""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lb.stores.base import JobStatus, QueuePolicy
from lb.stores.errors import StoreUnavailable
from lb.stores.file_jobs import FileJobQueue

POLICY = QueuePolicy(max_length=1000, max_attempts=3, ack_timeout=30, result_ttl=60)


async def test_every_instance_on_the_directory_sees_the_same_jobs(tmp_path: Path) -> None:
    a, b = FileJobQueue(str(tmp_path)), FileJobQueue(str(tmp_path))
    queued = await a.enqueue("q", b"payload", POLICY, owner="h")
    record = await b.get(queued.id)
    assert record is not None and record.status is JobStatus.QUEUED and record.owner == "h"
    job = await b.claim("q", "w", POLICY, block=1)
    assert job is not None and job.id == queued.id and job.payload == b"payload"
    assert await a.claim("q", "w", POLICY, block=0) is None  # claimed once
    await b.complete(job, b"result", POLICY)
    record = await a.get(queued.id)
    assert record is not None and record.status is JobStatus.DONE and record.result == b"result"
    again = await b.enqueue("q", b"x", POLICY, idempotency_key="k")
    assert (await a.enqueue("q", b"x", POLICY, idempotency_key="k")).id == again.id
    assert (await a.stats("q")).depth == 1


def _claim_all(root: str, out: multiprocessing.Queue[list[str]]) -> None:
    async def main() -> list[str]:
        jobs = FileJobQueue(root)
        got = []
        while (job := await jobs.claim("q", "w", POLICY, block=0.3)) is not None:
            got.append(job.id)
            await jobs.complete(job, b"", POLICY)
        return got

    out.put(asyncio.run(main()))


async def test_processes_racing_for_jobs_each_get_every_job_once(tmp_path: Path) -> None:
    jobs = FileJobQueue(str(tmp_path))
    ids = {(await jobs.enqueue("q", b"%d" % i, POLICY)).id for i in range(200)}
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[str]] = context.Queue()
    procs = [context.Process(target=_claim_all, args=(str(tmp_path), out)) for _ in range(4)]
    for p in procs:
        p.start()
    claimed = [job_id for _ in procs for job_id in out.get(timeout=60)]
    for p in procs:
        p.join(10)
    assert sorted(claimed) == sorted(ids)  # all of them, none twice
    for job_id in ids:
        record = await jobs.get(job_id)
        assert record is not None and record.status is JobStatus.DONE and record.attempt == 1


async def test_a_job_whose_claimer_died_is_taken_over_at_once(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)  # (exited: a pid nobody has, most likely)
    # `lost` names that pid in its deliveries: as if that process had claimed the job.
    lost, other = FileJobQueue(str(tmp_path), pid=dead_pid), FileJobQueue(str(tmp_path))
    queued = await lost.enqueue("q", b"work", POLICY)
    first = await lost.claim("q", "w1", POLICY, block=1)
    assert first is not None and first.attempt == 1
    taken = await other.claim("q", "w2", POLICY, block=0)  # long before ack_timeout
    assert taken is not None and (taken.id, taken.attempt) == (queued.id, 2)
    await lost.fail(first, "late", POLICY)  # no longer its delivery: nothing happens
    record = await other.get(queued.id)
    assert record is not None and record.status is JobStatus.RUNNING
    await other.complete(taken, b"ok", POLICY)
    assert (await other.stats("q")).in_flight == 0


async def test_sweep_removes_what_expired_and_nothing_else(tmp_path: Path) -> None:
    jobs = FileJobQueue(str(tmp_path))
    short = QueuePolicy(result_ttl=0.1, idempotency_ttl=0.1)
    done = await jobs.enqueue("q", b"a", short, idempotency_key="k")
    kept = await jobs.enqueue("q", b"b", POLICY)
    job = await jobs.claim("q", "w", short, block=1)
    assert job is not None and job.id == done.id
    await jobs.complete(job, b"r", short)
    await asyncio.sleep(0.15)  # past the 0.1s ttls: the point of the test
    assert jobs.sweep() == 2  # the record (and its result), the idempotency key
    assert not list((tmp_path / "jobs").glob(f"{done.id}.*"))
    assert await jobs.get(kept.id) is not None
    assert not list((tmp_path / "idem").rglob("*[0-9a-f]"))
    assert jobs.sweep() == 0


async def test_a_directory_gone_is_a_store_unavailable(tmp_path: Path) -> None:
    jobs = FileJobQueue(str(tmp_path / "jobs"))
    shutil.rmtree(tmp_path / "jobs")  # (or a full disk, or no permission)
    with pytest.raises(StoreUnavailable):
        await jobs.enqueue("q", b"x", POLICY)


async def test_a_large_result_is_kept_whole(tmp_path: Path) -> None:
    jobs = FileJobQueue(str(tmp_path))
    big = bytes(range(256)) * 8192  # 2 MiB: written and read in a thread
    queued = await jobs.enqueue("q", big[:300_000], POLICY)
    job = await jobs.claim("q", "w", POLICY, block=1)
    assert job is not None and job.payload == big[:300_000]
    await jobs.complete(job, big, POLICY)
    record = await jobs.get(queued.id)
    assert record is not None and record.result == big

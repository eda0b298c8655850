"""Job records and results in the job directory, and the markers that say when they expire.

  R/jobs/{id}.json     the record, a JSON object {queue, status, attempt, reason, created,
                       updated, owner, ticket, expires}; replaced whole, so a reader sees the old
                       record or the new one
  R/jobs/{id}.result   the stored response, once done (written before the record says so)
  R/expiry/{when}.{rand}   "job {id}" or "idem {path}": what `sweep` removes once `when` (ns)
                       has passed

Only the process that owns a job's ticket writes its record (lb.stores.file_jobs.tickets).
A finished record carries `expires`; reading treats an expired record as absent, and the
queue's `sweep` removes it from its marker, so nothing ever scans R/jobs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from typing import Any

from lb.stores.base import JobRecord, JobStatus, QueuePolicy
from lb.stores.file_jobs.files import (
    listdir,
    read_bytes,
    remove,
    tmp_path,
    write_bytes,
    write_file,
)

Record = dict[str, Any]  # as stored: JSON, so statuses are their string values

_ID = re.compile(r"^[0-9A-Za-z]{1,64}$")  # a job id we made (anything else names no file)


def new_record(queue: str, ticket: str, owner: str | None, now: float) -> Record:
    """The record of a job just queued."""
    return {
        "queue": queue,
        "status": JobStatus.QUEUED.value,
        "attempt": 0,
        "reason": None,
        "created": now,
        "updated": now,
        "owner": owner,
        "ticket": ticket,
        "expires": None,
    }


def job_record(job_id: str, record: Record, result: bytes | None) -> JobRecord:
    return JobRecord(
        job_id,
        record["queue"],
        JobStatus(record["status"]),
        int(record["attempt"]),
        record["reason"],
        result,
        float(record["created"]),
        float(record["updated"]),
        record.get("owner"),
    )


def expired(record: Record, now: float) -> bool:
    expires = record.get("expires")
    return expires is not None and float(expires) <= now


class Records:
    def __init__(self, root: str, pid: int) -> None:
        self.directory = os.path.join(root, "jobs")
        self.expiry = os.path.join(root, "expiry")
        for path in (self.directory, self.expiry):
            os.makedirs(path, exist_ok=True)
        self.pid = pid

    def read(self, job_id: str, *, expire: bool = True) -> Record | None:
        """The record of `job_id`; None when there is none, or (`expire`) it has expired."""
        if not _ID.match(job_id):
            return None
        try:
            with open(self._record_path(job_id), "rb") as f:
                record: Record = json.loads(f.read())
        except FileNotFoundError:
            return None
        if expire and expired(record, time.time()):
            return None  # (sweep removes it)
        return record

    def write(self, job_id: str, record: Record) -> None:
        tmp = tmp_path(self.directory, self.pid)
        write_file(tmp, json.dumps(record, separators=(",", ":")).encode())
        os.replace(tmp, self._record_path(job_id))

    def finish(self, job_id: str, record: Record, policy: QueuePolicy) -> None:
        """Write `record`, now final: it expires `result_ttl` from now."""
        now = time.time()
        record.update(updated=now, expires=now + policy.result_ttl)
        self.write(job_id, record)
        self.mark_expiry(record["expires"], f"job {job_id}")

    async def write_result(self, job_id: str, result: bytes) -> None:
        tmp = tmp_path(self.directory, self.pid)
        await write_bytes(tmp, result)
        os.replace(tmp, self._result_path(job_id))

    async def read_result(self, job_id: str) -> bytes | None:
        """None when it is gone (removed by an expiry after its record was read)."""
        try:
            return await read_bytes(self._result_path(job_id))
        except FileNotFoundError:
            return None

    def remove_result(self, job_id: str) -> None:
        remove(self._result_path(job_id))

    def remove_expired(self, job_id: str, now: float) -> bool:
        """Remove the record (and result) of `job_id` if it has expired; True when it did."""
        if not _ID.match(job_id):
            return False
        record = self.read(job_id, expire=False)
        if record is None or not expired(record, now):
            return False
        remove(self._record_path(job_id))
        remove(self._result_path(job_id))
        return True

    def mark_expiry(self, when: float, what: str) -> None:
        tmp = tmp_path(self.expiry, self.pid)
        write_file(tmp, what.encode())
        os.rename(tmp, os.path.join(self.expiry, f"{int(when * 1e9):020d}.{secrets.token_hex(4)}"))

    def due_markers(self, now: float) -> list[tuple[str, str, str]]:
        """(marker path, kind, what) of every marker due by `now`, oldest first."""
        due = []
        for name in sorted(listdir(self.expiry)):
            if name.startswith("."):
                continue
            if int(name.partition(".")[0]) > now * 1e9:
                break
            path = os.path.join(self.expiry, name)
            try:
                with open(path, encoding="utf-8") as f:
                    kind, _, what = f.read().partition(" ")
            except FileNotFoundError:
                continue
            due.append((path, kind, what))
        return due

    def _record_path(self, job_id: str) -> str:
        return os.path.join(self.directory, f"{job_id}.json")

    def _result_path(self, job_id: str) -> str:
        return os.path.join(self.directory, f"{job_id}.result")

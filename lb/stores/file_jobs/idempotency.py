"""Idempotency keys in the job directory: one job per key, whichever process races to make it.

  R/idem/{queue dir}/{sha256(key)}   "{job id}|{expires}|{fingerprint}"

A key is created with link(2) (O_EXCL for a file written first), so of two processes queueing
the same key at once exactly one makes it; the other reads it and answers with that job. An
expired key reads as absent and is removed on the way, by a rename aside first: a fresh key
made meanwhile by another process is then put back, never removed. Its expiry marker
(lb.stores.file_jobs.records) lets `sweep` remove the keys nobody asked for again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time

from lb.stores.file_jobs.files import create_exclusive, listdir, remove, tmp_path


class IdempotencyKeys:
    def __init__(self, root: str, pid: int) -> None:
        self.root = root
        self.directory = os.path.join(root, "idem")
        os.makedirs(self.directory, exist_ok=True)
        self.pid = pid
        self._made: set[str] = set()  # queue directories known to exist

    def path(self, queue_dir: str, key: str) -> str:
        """Where `key` of the queue kept in R/q/`queue_dir` lives (its directory made)."""
        directory = os.path.join(self.directory, queue_dir)
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        return os.path.join(directory, hashlib.sha256(key.encode()).hexdigest())

    def read(self, path: str) -> tuple[str, str] | None:
        """(job id, fingerprint) that the key at `path` names; None when absent or expired
        (then removed: moved aside first, so a fresh key made meanwhile is never removed)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        job_id, _, rest = data.decode().partition("|")
        expires, _, fingerprint = rest.partition("|")
        if float(expires) > time.time():
            return job_id, fingerprint
        aside = tmp_path(os.path.dirname(path), self.pid)
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        with open(aside, "rb") as f:
            moved = f.read()
        if moved == data:
            remove(aside)
        else:  # a fresh key replaced the expired one meanwhile: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            remove(aside)
        return None

    def create(self, path: str, job_id: str, expires: float, fingerprint: str) -> bool:
        """Make the key at `path` name `job_id`; False when it exists already."""
        return create_exclusive(path, f"{job_id}|{expires!r}|{fingerprint}".encode(), self.pid)

    def marker(self, path: str) -> str:
        """What its expiry marker holds."""
        return f"idem {os.path.relpath(path, self.root)}"

    def expire(self, what: str) -> bool:
        """The key a due marker names (`what`, after "idem "): removed unless renewed since;
        True when it is gone."""
        if ".." in what:
            return False
        return self.read(os.path.join(self.root, what)) is None

    def directories(self) -> list[str]:
        """Every queue's directory of keys (where temporary files are made)."""
        return [os.path.join(self.directory, name) for name in listdir(self.directory)]

"""A queue's tickets in the job directory: which jobs wait, run, back off or are dead, and who
owns each one.

  R/q/{queue}/queued/{key}-{id}    a job waiting, holding its payload; `key` is a zero-padded
                                   ns timestamp, so names sort in FIFO order
  R/q/{queue}/delayed/{due}-{id}   a retry waiting out its backoff (`due`: ns timestamp)
  R/q/{queue}/running/{key}-{id}.{pid}.{rand}   a delivery: the claimer's pid, and a random
                                   part that makes each delivery's name (`Job.handle`) unique
  R/q/{queue}/dead/{key}-{id}      the dead letters (the payload stays in the ticket)

Ownership. A ticket moves between the subdirectories by `os.rename`, which exactly one process
wins; the winner owns the job until it moves the ticket on. A move touches the ticket first (a
rename keeps the mtime, and running/'s mtimes are the delivery times). A running ticket whose
pid is gone (`kill(pid, 0)`), or whose mtime is older than `ack_timeout`, is renamed by the
next claimer to its own name, as a new attempt (`reclaim`).

Counting. Listings are cached with their directory's mtime, and trusted only once that mtime
is `SETTLED` old (timestamps are coarse, so a change within the same tick may not move it).
A listing is one `scandir` of at most `max_length` names.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time

from lb.stores.base import QueuePolicy
from lb.stores.file_jobs.files import listdir, remove, tmp_path, write_bytes

SETTLED = 0.1  # a directory listing is reused while its mtime is at least this old
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")  # a queue name usable as a file name


def queue_dir_name(queue: str) -> str:
    """The directory name of `queue`: itself, or a hash of it when it is no safe file name."""
    return queue if _SAFE.match(queue) else "~" + hashlib.sha256(queue.encode()).hexdigest()


def ticket_name(key_ns: int, job_id: str) -> str:
    return f"{key_ns:020d}-{job_id}"


def job_of(handle: str) -> str:
    """The job id in a ticket's or a delivery's name."""
    return handle.partition("-")[2].partition(".")[0]


class Tickets:
    def __init__(self, root: str, pid: int) -> None:
        self.directory = os.path.join(root, "q")
        os.makedirs(self.directory, exist_ok=True)
        self.pid = pid  # named in our deliveries: a claimer finding it gone takes them over
        self._listings: dict[str, tuple[int, list[str]]] = {}  # dir -> (mtime_ns, names)
        self._made: set[str] = set()  # queue directories known to exist

    def queue_dir(self, queue: str) -> str:
        """R/q/{queue}, its subdirectories made."""
        q = os.path.join(self.directory, queue_dir_name(queue))
        if q not in self._made:
            for sub in ("queued", "running", "delayed", "dead"):
                os.makedirs(os.path.join(q, sub), exist_ok=True)
            self._made.add(q)
        return q

    def queue_dirs(self) -> list[str]:
        """Every queue's directory (where temporary files are made)."""
        return [os.path.join(self.directory, name) for name in listdir(self.directory)]

    # -- moves -----------------------------------------------------------------------------------

    async def add(self, q: str, ticket: str, payload: bytes) -> None:
        """A new ticket in queued/, holding `payload`: written aside, then renamed in whole."""
        tmp = tmp_path(q, self.pid)
        await write_bytes(tmp, payload)
        os.rename(tmp, os.path.join(q, "queued", ticket))

    def put(self, q: str, mine: str, where: str, ticket: str) -> None:
        """Our delivery `mine` back to `where` (queued/, delayed/ or dead/) as `ticket`."""
        os.rename(mine, os.path.join(q, where, ticket))

    def bury(self, q: str, mine: str, job_id: str) -> None:
        self.put(q, mine, "dead", ticket_name(time.time_ns(), job_id))

    def done(self, q: str, handle: str) -> None:
        """Remove our delivery `handle` (gone already: another worker took it over)."""
        if os.sep not in handle:
            remove(os.path.join(q, "running", handle))

    def cancel(self, q: str, ticket: str) -> bool:
        """Remove a waiting ticket; False when it is not waiting any more."""
        # delayed/ first: `promote_due` moves due retries from there to queued/, never back.
        return remove(os.path.join(q, "delayed", ticket)) or remove(
            os.path.join(q, "queued", ticket)
        )

    def promote_due(self, q: str) -> None:
        """Retries whose backoff is over, from delayed/ to queued/."""
        now_ns = time.time_ns()
        for name in self.names(os.path.join(q, "delayed")):
            if int(name.partition("-")[0]) > now_ns:
                break
            self.move(q, "delayed", name, "queued", name)

    def reclaim(self, q: str, policy: QueuePolicy) -> str | None:
        """A running ticket whose worker is gone or silent for ack_timeout, now ours."""
        running = os.path.join(q, "running")
        names = self.names(running)
        if not names:
            return None
        silent: list[tuple[float, str]] = []
        limit = time.time() - policy.ack_timeout
        for name in names:
            try:
                mtime = os.stat(os.path.join(running, name)).st_mtime
            except FileNotFoundError:
                continue
            if mtime <= limit or not _alive(_pid_of(name)):
                silent.append((mtime, name))
        for _, name in sorted(silent):
            mine = self.move(q, "running", name, "running", self.delivery(name))
            if mine is not None:
                return mine
        return None

    def next_queued(self, q: str) -> str | None:
        """The oldest waiting ticket, now ours (in running/)."""
        for name in self.names(os.path.join(q, "queued")):
            mine = self.move(q, "queued", name, "running", self.delivery(name))
            if mine is not None:
                return mine
        return None

    def take_dead(self, q: str, name: str) -> str | None:
        """The dead ticket `name`, now ours (in running/); None when another replay took it."""
        return self.move(q, "dead", name, "running", self.delivery(name))

    def redeliver(self, q: str, handle: str) -> str | None:
        """Our delivery `handle` under a new name (so a late takeover cannot race the move
        that follows); None when it is no longer ours."""
        if os.sep in handle or handle.startswith("."):
            return None
        return self.move(q, "running", handle, "running", self.delivery(handle))

    def delivery(self, name: str) -> str:
        """A name in running/ for the ticket `name` (queued/, dead/ or running/ before)."""
        return f"{name.partition('.')[0]}.{self.pid}.{secrets.token_hex(4)}"

    def move(self, q: str, src: str, name: str, dst: str, new: str) -> str | None:
        """Rename q/src/name to q/dst/new, touched (its mtime: when it got there); the new
        path, or None when another process moved or removed it first."""
        old = os.path.join(q, src, name)
        path = os.path.join(q, dst, new)
        try:
            os.utime(old)
            os.rename(old, path)
        except FileNotFoundError:
            return None
        return path

    # -- listings ----------------------------------------------------------------------------------

    def names(self, directory: str) -> list[str]:
        """The sorted entries of `directory` (temporary files left out), cached by mtime."""
        try:
            mtime = os.stat(directory).st_mtime_ns
        except FileNotFoundError:
            return []
        cached = self._listings.get(directory)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        names = sorted(n for n in listdir(directory) if not n.startswith("."))
        if time.time_ns() - mtime >= SETTLED * 1e9:
            self._listings[directory] = (mtime, names)
        else:
            self._listings.pop(directory, None)
        return names

    def count(self, q: str, *subdirs: str) -> int:
        return sum(len(self.names(os.path.join(q, sub))) for sub in subdirs)


def _pid_of(name: str) -> int:
    parts = name.split(".")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # (not ours to judge: the ack_timeout applies)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

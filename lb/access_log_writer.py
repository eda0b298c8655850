"""The access log's writer thread: one per process, it writes the batches of lines the event
loop hands over, in order, so the loop never waits for the disk (lb.access_log buffers the
lines).

Kept out of the compiled hot path on purpose: it runs in its own thread, and what the event
loop calls of it (`write`, `pending`) happens once per batch of lines, not per request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading

log = logging.getLogger("lb.access_log")


class WriterThread:
    """The process's writer thread, started on first use: takes (fd, bytes) in order, writes
    them, closes the files it is told to. `queued` is only moved by the event loop's thread and
    `written` only by the writer's, so their difference needs no lock."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[int, bytes, bool] | threading.Event] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.queued = 0
        self.written = 0
        self._failing: set[int] = set()  # fds whose last write failed: warned about once

    @property
    def pending(self) -> int:
        return self.queued - self.written

    def write(self, fd: int, data: bytes) -> None:
        self.queued += len(data)
        self._put((fd, data, False))

    def close(self, fd: int) -> None:
        self._put((fd, b"", True))

    def drain(self, timeout: float) -> bool:
        """Wait (blocking) until what was handed over so far is written; False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _put(self, item: tuple[int, bytes, bool]) -> None:
        if self._pid != os.getpid():  # first use, or a forked child: the thread is not ours
            self._queue = queue.SimpleQueue()
            self.queued = self.written = 0
            self._thread = threading.Thread(target=self._run, name="lb-access-log", daemon=True)
            self._pid = os.getpid()
            self._thread.start()
        self._queue.put(item)

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            fd, data, close = item
            if close:
                with contextlib.suppress(OSError):
                    os.close(fd)
                self._failing.discard(fd)
                continue
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                self._failing.discard(fd)
            except OSError as err:  # a full disk, a closed stdout: the proxy goes on
                if fd not in self._failing:
                    self._failing.add(fd)
                    log.warning("access log: writing failed, lines lost: %s", err)
            self.written += len(data)


writer_thread = WriterThread()

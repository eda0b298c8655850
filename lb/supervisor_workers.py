"""The worker processes of `lb run`, as the supervisor runs them: spawning, readiness,
restarts, stopping.

`WorkerProcesses` is the base of `lb.supervisor.Supervisor` (which sets its attributes and owns
the config and the reloads). Each worker is `python -m lb.worker`, started fresh (not forked) so
that no event loop state is shared, on the config snapshot, binding the listeners with
SO_REUSEPORT. Invariants:

- A worker reports "ready" on a pipe once its listeners are bound. Only ready workers get
  SIGHUP (before that, the default action of SIGHUP would kill it); a worker that was spawned
  before the latest reload is told to reload as soon as it is ready.
- A worker that exits while lb is not stopping is restarted (after RESTART_BACKOFF when it
  lived less than that), with its gauge files removed; its counters stay.
- If a worker of the first start exits before it is ready (a port taken, a bad certificate),
  `_failed` is set: `lb run` stops and exits 1 rather than restart it forever.
- Stopping: SIGTERM, then up to `defaults.shutdown_grace` plus KILL_AFTER_GRACE to drain, then
  SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from lb.config import Config

log = logging.getLogger("lb.supervisor")

RESTART_BACKOFF = 1.0  # seconds between restarts of a worker that keeps dying
KILL_AFTER_GRACE = 5.0  # seconds past shutdown_grace before workers are killed


@dataclass
class WorkerProcess:
    index: int
    proc: subprocess.Popen[bytes]
    generation: int  # of the config snapshot when it was spawned
    ready_fd: int | None = None  # read end of its "ready" pipe, until it reports
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    ready: bool = False


class WorkerProcesses:
    """The supervisor's worker processes (attributes set by `Supervisor.__init__`)."""

    config_path: str  # the user's file, named to workers (--source) for their messages
    config: Config  # the running config
    snapshot: str  # the file holding the text of `config`: what workers load
    generation: int  # of the snapshot
    count: int  # workers to run (--workers)
    run_dir: str
    jobs_dir: str
    workers: list[WorkerProcess]
    stopping: bool
    _failed: asyncio.Event  # a worker of the first start died before it was ready
    _all_ready: asyncio.Event

    def _signal_reload(self, worker: WorkerProcess) -> None:
        if worker.ready and worker.generation < self.generation and worker.proc.poll() is None:
            worker.generation = self.generation
            worker.proc.send_signal(signal.SIGHUP)

    def _spawn(self, index: int, restarts: int = 0) -> WorkerProcess:
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lb.worker",
                    "-c",
                    self.snapshot,
                    "--source",
                    self.config_path,
                    "--ready-fd",
                    str(write_fd),
                ],
                stdin=subprocess.DEVNULL,
                pass_fds=(write_fd,),
                # See lb.proxy.health.channel; LB_WORKERS: lb.filters.rate_limit; LB_JOBS_DIR:
                # lb.stores.file_jobs.
                env={
                    **os.environ,
                    "LB_HEALTH_DIR": self.run_dir,
                    "LB_WORKERS": str(self.count),
                    "LB_JOBS_DIR": self.jobs_dir,
                },
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        worker = WorkerProcess(index, proc, self.generation, read_fd, restarts=restarts)
        os.set_blocking(read_fd, False)
        asyncio.get_running_loop().add_reader(read_fd, self._on_ready_pipe, worker)
        log.info("started worker %d (pid %d)", index, proc.pid)
        return worker

    def _on_ready_pipe(self, worker: WorkerProcess) -> None:
        assert worker.ready_fd is not None
        try:
            data = os.read(worker.ready_fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._close_ready_pipe(worker)
        if not data:
            return  # it exited before it was ready; watch_workers reports it
        worker.ready = True
        self._signal_reload(worker)  # a reload happened while it was starting
        if not self._all_ready.is_set() and all(w.ready for w in self.workers):
            self._all_ready.set()
            binds = ", ".join(f"{n} {ls.bind}" for n, ls in self.config.listeners.items())
            log.info("serving %s with %d workers", binds or "no listeners", len(self.workers))

    def _close_ready_pipe(self, worker: WorkerProcess) -> None:
        if worker.ready_fd is not None:
            asyncio.get_running_loop().remove_reader(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None

    def start_workers(self) -> None:
        self.workers = [self._spawn(i) for i in range(self.count)]

    async def watch_workers(self) -> None:
        """Restart a worker that exits while we are not stopping."""
        while not self.stopping:
            await asyncio.sleep(0.1)
            for i, worker in enumerate(self.workers):
                code = worker.proc.poll()
                if code is None or self.stopping:
                    continue
                self._close_ready_pipe(worker)
                forget_process_gauges(worker.proc.pid)
                if not worker.ready and not self._all_ready.is_set():
                    log.error(
                        "worker %d (pid %d) failed to start (exit code %s); stopping",
                        worker.index,
                        worker.proc.pid,
                        code,
                    )
                    self._failed.set()
                    return
                log.error(
                    "worker %d (pid %d) exited with code %s; restarting it (restart %d)",
                    worker.index,
                    worker.proc.pid,
                    code,
                    worker.restarts + 1,
                )
                if time.monotonic() - worker.started < RESTART_BACKOFF:
                    await asyncio.sleep(RESTART_BACKOFF)
                    if self.stopping:
                        return
                self.workers[i] = self._spawn(worker.index, worker.restarts + 1)

    async def stop(self) -> None:
        self.stopping = True
        grace = self.config.defaults.shutdown_grace
        log.info("stopping: workers drain for up to %gs", grace)
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + KILL_AFTER_GRACE
        while time.monotonic() < deadline and any(w.proc.poll() is None for w in self.workers):
            await asyncio.sleep(0.05)
        for worker in self.workers:
            self._close_ready_pipe(worker)
            if worker.proc.poll() is None:
                log.warning("worker pid %d did not stop in time; killing it", worker.proc.pid)
                worker.proc.kill()
                worker.proc.wait()


def forget_process_gauges(pid: int) -> None:
    """Drop a dead worker's gauge files: its connections and its view of server health are
    gone with it (prometheus-client's mark_process_dead only drops the live* modes). Its
    counters stay, so totals do not go backwards."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    for path in glob.glob(os.path.join(directory, f"gauge_*_{pid}.db")):
        with contextlib.suppress(OSError):
            os.remove(path)

"""`lb run`: the supervisor process.

It starts N worker processes (`python -m lb.worker`), each binding the listeners with
SO_REUSEPORT; serves the admin listener (metrics of every worker aggregated through
prometheus-client's multiprocess mode); restarts a worker that dies; and relays signals:

- SIGHUP (or POST /api/v1/reload): validate the file first; if it is valid, every worker
  reloads it; if not, the problems are logged (and returned) and nothing changes.
- SIGTERM / SIGINT: workers stop accepting and drain for `defaults.shutdown_grace`; whatever
  is still running a few seconds after that is killed; exit 0.

Workers are processes started fresh (not forked) so that no event loop state is shared.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from lb.config import Config, ConfigError, load_config

log = logging.getLogger("lb.supervisor")

RESTART_BACKOFF = 1.0  # seconds between restarts of a worker that keeps dying


@dataclass
class WorkerProcess:
    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0


class Supervisor:
    def __init__(self, config_path: str, config: Config, workers: int) -> None:
        self.config_path = config_path
        self.config = config
        self.count = workers
        self.workers: list[WorkerProcess] = []
        self.stopping = False
        self.loaded_at = time.time()

    # Workers --------------------------------------------------------------------------------

    def _spawn(self, index: int, restarts: int = 0) -> WorkerProcess:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lb.worker", "-c", self.config_path],
            stdin=subprocess.DEVNULL,
        )
        log.info("started worker %d (pid %d)", index, proc.pid)
        return WorkerProcess(index, proc, restarts=restarts)

    def start_workers(self) -> None:
        self.workers = [self._spawn(i) for i in range(self.count)]

    async def watch_workers(self) -> None:
        """Restart a worker that exits while we are not stopping."""
        while not self.stopping:
            await asyncio.sleep(0.2)
            for i, worker in enumerate(self.workers):
                code = worker.proc.poll()
                if code is None or self.stopping:
                    continue
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(worker.proc.pid)
                log.error(
                    "worker %d (pid %d) exited with code %s; restarting",
                    worker.index,
                    worker.proc.pid,
                    code,
                )
                if time.monotonic() - worker.started < RESTART_BACKOFF:
                    await asyncio.sleep(RESTART_BACKOFF)
                self.workers[i] = self._spawn(worker.index, worker.restarts + 1)

    def reload(self) -> list[str]:
        """Validate, then tell every worker to reload. Returns the problems (empty: done)."""
        try:
            config = load_config(self.config_path)
        except ConfigError as err:
            problems = [str(p) for p in err.problems]
            log.error("reload refused, the running config stays:\n%s", "\n".join(problems))
            return problems
        self.config = config
        self.loaded_at = time.time()
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGHUP)
        log.info("reloaded %s in %d workers", self.config_path, len(self.workers))
        return []

    async def stop(self) -> None:
        self.stopping = True
        grace = self.config.defaults.shutdown_grace
        log.info("stopping: workers drain for up to %.0fs", grace)
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + 5.0
        while time.monotonic() < deadline and any(w.proc.poll() is None for w in self.workers):
            await asyncio.sleep(0.05)
        for worker in self.workers:
            if worker.proc.poll() is None:
                log.warning("worker pid %d did not stop in time; killing it", worker.proc.pid)
                worker.proc.kill()
                worker.proc.wait()

    # Main ------------------------------------------------------------------------------------

    async def run(self) -> int:
        from lb.admin.server import AdminServer

        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        admin = None
        if self.config.admin is not None:
            admin = AdminServer(self)
            await admin.start(self.config.admin.bind)
        self.start_workers()
        watcher = asyncio.ensure_future(self.watch_workers())
        await done.wait()
        watcher.cancel()
        await self.stop()
        if admin is not None:
            await admin.stop()
        log.info("stopped")
        return 0


def run(config_path: str, workers: int | None) -> int:
    """Entry point of `lb run`: validate, set up shared metrics, supervise until stopped."""
    logging.basicConfig(
        level=os.environ.get("LB_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s [supervisor] %(name)s: %(message)s",
    )
    try:
        config = load_config(config_path)
    except ConfigError as err:
        print(f"{config_path}: invalid config", file=sys.stderr)
        print(err, file=sys.stderr)
        return 1
    own_dir = None
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        own_dir = tempfile.mkdtemp(prefix="lb-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    from lb.loops import install_best_loop

    install_best_loop()
    count = workers if workers else (os.cpu_count() or 1)
    try:
        return asyncio.run(Supervisor(os.path.abspath(config_path), config, count).run())
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)

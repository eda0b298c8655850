"""`lb run`: the supervisor process.

It starts N worker processes (`lb.supervisor_workers`), each binding the listeners with
SO_REUSEPORT; serves the admin listener (metrics of every worker aggregated through
prometheus-client's multiprocess mode); restarts a worker that dies; and relays signals:

- SIGHUP (or POST /api/v1/reload): validate the file first (`lb.supervisor_config`); if it is
  valid, every worker reloads it; if not, the problems are logged (and returned) and nothing
  changes.
- SIGTERM / SIGINT: workers stop accepting and drain for `defaults.shutdown_grace`; whatever
  is still running a few seconds after that is killed; exit 0.

This module holds the `Supervisor`: its state, the config and its reloads, what the admin API
asks of it (reload, re-arm, drain, cache purge), and its main. Invariants:

- Workers never read the user's file. The supervisor validates it and writes the text it
  accepted to a snapshot in its run directory; workers load the snapshot. So a worker started
  (or restarted) after the file was edited, but before a reload, serves what its siblings serve,
  and a file broken in between cannot stop a restart.
- A reload that fails validation, or changes what only a restart can (`fixed_at_start`),
  changes nothing: the old config keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lb.config import Config, ConfigError
from lb.supervisor_config import fixed_at_start, ports_in_use, read_config
from lb.supervisor_workers import WorkerProcesses

if TYPE_CHECKING:
    # Imported in run(): after the metrics dir is set.
    from lb.proxy.health.channel import HealthPublisher
    from lb.stores import Stores

log = logging.getLogger("lb.supervisor")

SWEEP_EVERY = 10.0  # seconds between removals of expired jobs from the shared job directory


class Supervisor(WorkerProcesses):
    def __init__(self, config_path: str, config: Config, text: str, workers: int) -> None:
        self.config_path = config_path
        self.config = config
        self.count = workers
        self.workers = []
        self.stopping = False
        self.loaded_at = time.time()
        self.generation = 1
        self.run_dir = tempfile.mkdtemp(prefix="lb-run-")
        self.snapshot = os.path.join(self.run_dir, "config.yaml")
        self._write_snapshot(text)
        self._failed = asyncio.Event()  # a worker of the first start died before it was ready
        self._all_ready = asyncio.Event()
        self.health: HealthPublisher | None = None  # active health checks, once for all workers
        # Without `redis:`, the job queue the workers share (lb.stores.file_jobs).
        self.jobs_dir = os.path.join(self.run_dir, "jobs")
        # The supervisor's own Redis client (when `redis:` is set), else the shared job queue:
        # the admin API's view of the queues, and the lb_queue_* gauges.
        from lb.stores import build_stores  # (after the metrics dir is set: see run())

        self.stores: Stores = build_stores(config, jobs_dir=self.jobs_dir)
        self._retiring: asyncio.Future[None] | None = None
        self._purges = 0  # cache purge requests sent to the workers (lb.cache.purge)
        self._next_sweep = 0.0  # (monotonic) of the shared job directory

    # Config --------------------------------------------------------------------------------

    def _write_snapshot(self, text: str) -> None:
        tmp = self.snapshot + ".tmp"
        Path(tmp).write_text(text, encoding="utf-8")
        os.replace(tmp, self.snapshot)  # a worker reading it sees the old or the new, whole

    def reload(self) -> list[str]:
        """Validate, then tell every worker to reload. Returns the problems (empty: done)."""
        try:
            text, config = read_config(self.config_path)
            problems = fixed_at_start(self.config, config)
        except ConfigError as err:
            problems = list(err.problems)
        if problems:
            lines = [str(p) for p in problems]
            log.error("reload refused, the running config stays:\n%s", "\n".join(lines))
            return lines
        self._write_snapshot(text)
        self.generation += 1
        self.config = config
        self.loaded_at = time.time()
        from lb.stores import build_stores, retire

        old_stores = self.stores
        self.stores = build_stores(config, self.stores, jobs_dir=self.jobs_dir)
        if self.stores is not old_stores:
            self._retiring = asyncio.ensure_future(retire(old_stores, self.stores))
        if self.health is not None:
            self.health.reload(config)  # before the workers look for its verdicts
        for worker in self.workers:
            self._signal_reload(worker)
        log.info("reloaded %s (%d workers)", self.config_path, len(self.workers))
        return []

    def rearm(self, route: str) -> str | None:
        """Re-arm the canary arms that `route`'s rollback rule took out, in every worker
        (SIGUSR1; a worker re-arms every rolled-back split it has). None when done, else why
        not. Workers still starting need nothing: they start with every arm armed."""
        from lb.core.router import route_name

        names = {route_name(r, i): r for i, r in enumerate(self.config.routes)}
        found = names.get(route)
        if found is None:
            return f"no route {route!r}"
        if found.rollback is None:
            return f"route {route!r} has no rollback rule, so nothing to re-arm"
        for worker in self.workers:
            if worker.ready and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGUSR1)
        log.info("re-armed the canary arms of route %s", route)
        return None

    async def purge_cache(self, kind: str, value: str) -> tuple[int, list[int]]:
        """Purge the response cache everywhere (lb.cache.purge): the count of entries removed,
        and the pids of workers that did not answer in time (without redis)."""
        from lb.cache import purge
        from lb.cache.cache import ResponseCache

        if self.stores.redis is not None:
            # The shared store is the cache; the workers' local tiers follow its messages.
            count = await ResponseCache(self.config.cache, self.stores.cache).purge(kind, value)
            return count, []
        self._purges += 1
        seq = self._purges
        purge.write_request(self.run_dir, seq, kind, value)
        pids = [w.proc.pid for w in self.workers if w.ready and w.proc.poll() is None]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)
        counts: dict[int, int] = {}
        deadline = time.monotonic() + purge.ANSWER_WITHIN
        while len(counts) < len(pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            for pid in pids:
                if pid not in counts:
                    answer = purge.read_answer(self.run_dir, seq, pid)
                    if answer is not None:
                        counts[pid] = answer
        missing = [pid for pid in pids if pid not in counts]
        if missing:
            log.warning("cache purge %d: no answer from workers %s", seq, missing)
        log.info("cache purge %s %r: %d entries", kind, value, sum(counts.values()))
        return sum(counts.values()), missing

    def drain(self, pool: str, address: str, drained: bool) -> str | None:
        """Drain (or enable) a configured server in every worker, now and in workers started
        later, until enabled or removed from the config. None when done, else why not."""
        found = self.config.pools.get(pool)
        if found is None:
            return f"no pool {pool!r}"
        if all(s.address != address for s in found.servers):
            known = ", ".join(s.address for s in found.servers) or "none"
            return f"pool {pool!r} has no server {address!r} (its servers: {known})"
        if self.health is None or not self.health.set_drained(pool, address, drained):
            return "lb is still starting"
        log.info("%s server %s in pool %s", "drained" if drained else "enabled", address, pool)
        return None

    # Main ------------------------------------------------------------------------------------

    async def run(self) -> int:
        from lb.admin.server import AdminServer
        from lb.build import describe

        log.info("%s, config %s", describe(), self.config_path)
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        admin = None
        try:
            if self.config.admin is not None:
                admin = AdminServer(self)
                try:
                    await admin.start(self.config.admin.bind)
                except OSError as err:
                    log.error("admin.bind %s: %s", self.config.admin.bind, err.strerror or err)
                    return 1
            from lb.proxy.health.channel import HealthPublisher

            if self.stores.redis is not None:
                self.stores.redis.start()
            queue_stats = self._publish_queue_stats()
            self.health = HealthPublisher(self.run_dir)
            self.health.start(self.config)
            self.start_workers()
            watcher = asyncio.ensure_future(self.watch_workers())
            failed = asyncio.ensure_future(self._failed.wait())
            stop = asyncio.ensure_future(done.wait())
            await asyncio.wait([failed, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in (watcher, failed, stop, queue_stats):
                task.cancel()
            await self.stop()
            if self._failed.is_set():
                log.error("lb did not start: see the worker's error above")
                return 1
            log.info("stopped")
            return 0
        finally:
            if admin is not None:
                await admin.stop()
            if self.health is not None:
                self.health.stop()
            from lb.stores import retire

            await retire(self.stores, None)
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _publish_queue_stats(self) -> asyncio.Task[None]:
        """The lb_queue_* gauges, published here only (the queues are shared: on Redis, or in
        the workers' job directory, which this also sweeps of expired jobs)."""
        from lb.offload.stats import publish_forever
        from lb.stores.file_jobs import FileJobQueue

        def source() -> tuple[Any, list[str]]:
            jobs = self.stores.jobs
            if isinstance(jobs, FileJobQueue) and time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + SWEEP_EVERY
                try:
                    jobs.sweep()
                except OSError as e:
                    log.warning("sweeping the job directory %s: %s", jobs.root, e)
            return jobs, list(self.config.queues)

        return asyncio.ensure_future(publish_forever(source))


def run(config_path: str, workers: int | None) -> int:
    """Entry point of `lb run`: validate, set up shared metrics, supervise until stopped."""
    logging.basicConfig(
        level=os.environ.get("LB_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s [supervisor] %(name)s: %(message)s",
    )
    try:
        text, config = read_config(config_path)
    except ConfigError as err:
        print(f"{config_path}: invalid config ({len(err.problems)} problem(s))", file=sys.stderr)
        print(err, file=sys.stderr)
        return 1
    busy = ports_in_use(config)
    if busy:
        print(f"{config_path}: a listener's address is in use", file=sys.stderr)
        print("\n".join(busy), file=sys.stderr)
        return 1
    own_dir = None
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        own_dir = tempfile.mkdtemp(prefix="lb-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    from lb.loops import install_best_loop

    install_best_loop()
    count = workers if workers else (os.cpu_count() or 1)

    async def main() -> int:
        return await Supervisor(os.path.abspath(config_path), config, text, count).run()

    try:
        return asyncio.run(main())
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)

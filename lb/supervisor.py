"""`lb run`: the supervisor process.

It starts N worker processes (`python -m lb.worker`), each binding the listeners with
SO_REUSEPORT; serves the admin listener (metrics of every worker aggregated through
prometheus-client's multiprocess mode); restarts a worker that dies; and relays signals:

- SIGHUP (or POST /api/v1/reload): validate the file first; if it is valid, every worker
  reloads it; if not, the problems are logged (and returned) and nothing changes.
- SIGTERM / SIGINT: workers stop accepting and drain for `defaults.shutdown_grace`; whatever
  is still running a few seconds after that is killed; exit 0.

Invariants:

- Workers never read the user's file. The supervisor validates it and writes the text it
  accepted to a snapshot in its run directory; workers load the snapshot. So a worker started
  (or restarted) after the file was edited, but before a reload, serves what its siblings serve,
  and a file broken in between cannot stop a restart.
- A worker reports "ready" on a pipe once its listeners are bound. Only ready workers get
  SIGHUP (before that, the default action of SIGHUP would kill it); a worker that was spawned
  before the latest reload is told to reload as soon as it is ready.
- If a worker of the first start exits before it is ready (a port taken, a bad certificate),
  `lb run` stops and exits 1 rather than restart it forever.

Workers are processes started fresh (not forked) so that no event loop state is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lb.config import Config, ConfigError, Problem, load_config_text
from lb.config.base import split_address

if TYPE_CHECKING:
    # Imported in run(): after the metrics dir is set.
    from lb.proxy.health.channel import HealthPublisher
    from lb.stores import Stores

log = logging.getLogger("lb.supervisor")

RESTART_BACKOFF = 1.0  # seconds between restarts of a worker that keeps dying
KILL_AFTER_GRACE = 5.0  # seconds past shutdown_grace before workers are killed
SWEEP_EVERY = 10.0  # seconds between removals of expired jobs from the shared job directory


@dataclass
class WorkerProcess:
    index: int
    proc: subprocess.Popen[bytes]
    generation: int  # of the config snapshot when it was spawned
    ready_fd: int | None = None  # read end of its "ready" pipe, until it reports
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    ready: bool = False


class Supervisor:
    def __init__(self, config_path: str, config: Config, text: str, workers: int) -> None:
        self.config_path = config_path
        self.config = config
        self.count = workers
        self.workers: list[WorkerProcess] = []
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

    def _signal_reload(self, worker: WorkerProcess) -> None:
        if worker.ready and worker.generation < self.generation and worker.proc.poll() is None:
            worker.generation = self.generation
            worker.proc.send_signal(signal.SIGHUP)

    # Workers --------------------------------------------------------------------------------

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

    # Main ------------------------------------------------------------------------------------

    async def run(self) -> int:
        from lb.admin.server import AdminServer

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


def read_config(path: str) -> tuple[str, Config]:
    """The text of the config file at `path` and the config it holds, or ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([Problem("", f"cannot read {path}: not UTF-8 ({e.reason})")]) from None
    except OSError as e:
        raise ConfigError([Problem("", f"cannot read {path}: {e.strerror or e}")]) from None
    # Files named in the config (certificates) are relative to the config file's directory.
    return text, load_config_text(text, path, base_dir=os.path.dirname(os.path.abspath(path)))


def fixed_at_start(running: Config, new: Config) -> list[Problem]:
    """What a reload cannot change: admin.bind (the supervisor's own socket); and a listener
    it adds or moves must find its address free (the workers bind it once the reload is
    accepted; their own sockets are not checked, so a listener may change its mode in place)."""
    problems = []
    old_admin = running.admin.bind if running.admin else None
    new_admin = new.admin.bind if new.admin else None
    if old_admin != new_admin:
        restart = "a reload keeps the admin socket opened at start; restart lb to apply this"
        problems.append(Problem("admin.bind", f"admin listener changed: {restart}"))
    ours = {ls.bind for ls in running.listeners.values()}
    for name, listener in new.listeners.items():
        if listener.bind in ours:
            continue
        for message in ports_in_use(new.model_copy(update={"listeners": {name: listener}})):
            problems.append(Problem(f"listeners.{name}", message.split(": ", 1)[1]))
    return problems


def ports_in_use(config: Config) -> list[str]:
    """Listeners whose address another process holds, one message each.

    Workers bind with SO_REUSEPORT, which would quietly share a port with another program
    (or a second lb) that also sets it; binding once without it first makes that an error.
    """
    busy = []
    for name, listener in config.listeners.items():
        host, port = split_address(listener.bind)
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if listener.mode == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as err:
                busy.append(f"listeners.{name}: cannot bind {listener.bind}: {err.strerror}")
    return busy


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

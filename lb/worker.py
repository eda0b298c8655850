"""A worker process: `python -m lb.worker -c FILE`, started by the supervisor.

It serves the config on uvloop (when installed) until SIGTERM or SIGINT, then drains; SIGHUP
reloads the config file (a config that fails validation is refused and the old one kept) and
reopens the access log, so that logrotate can move it away. It also exits, draining, when its
supervisor disappears, so no orphan keeps a port.

The supervisor passes `--ready-fd`: one line is written there once the listeners are bound,
and `--source`: the user's file, named in messages (`-c` is the supervisor's snapshot of it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
from pathlib import Path

from lb.access_log import AccessLog
from lb.cache import purge
from lb.config import Config, ConfigError, load_config_text
from lb.core.forwarding import reseed_request_ids
from lb.filters.splits import rearm_all
from lb.loops import install_best_loop
from lb.proxy.proxy import Proxy

log = logging.getLogger("lb.worker")


def _load(config_path: str, source: str) -> Config:
    """The snapshot at `config_path`, read as if it were the user's file `source`: named in
    messages, and the directory that relative file names in it start from."""
    text = Path(config_path).read_text(encoding="utf-8")
    return load_config_text(text, source, base_dir=os.path.dirname(os.path.abspath(source)))


async def serve(config_path: str, source: str | None = None, ready_fd: int | None = None) -> None:
    source = source or config_path
    config = _load(config_path, source)
    worker = Proxy(config)
    await worker.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(worker, config_path, source))
    # SIGUSR1: re-arm canary arms rolled back by their route's rollback rule (admin API).
    loop.add_signal_handler(signal.SIGUSR1, lambda: rearm_all(worker.runtime.splits))
    # SIGUSR2: purge this worker's response cache as the supervisor asks (lb.cache.purge).
    purges = CachePurges(worker, os.path.dirname(os.path.abspath(config_path)))
    loop.add_signal_handler(signal.SIGUSR2, purges.run)
    parent = os.getppid()
    log.info("worker %d serving %s", os.getpid(), source)
    if ready_fd is not None:
        try:
            os.write(ready_fd, b"ready\n")
        finally:
            os.close(ready_fd)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            if os.getppid() != parent:
                log.warning("supervisor %d is gone; worker %d stops", parent, os.getpid())
                break
    grace = worker.runtime.config.defaults.shutdown_grace
    log.info("worker %d draining (up to %gs)", os.getpid(), grace)
    await worker.shutdown(grace)
    log.info("worker %d stopped", os.getpid())


class CachePurges:
    """A worker's side of `POST /api/v1/cache/purge` without redis."""

    def __init__(self, proxy: Proxy, run_dir: str) -> None:
        self.proxy = proxy
        self.run_dir = run_dir
        self.done = 0  # the last request handled
        self.lock = asyncio.Lock()  # one pass at a time: a request is handled once
        self.tasks: set[asyncio.Task[None]] = set()

    def run(self) -> None:
        task = asyncio.ensure_future(self._run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self) -> None:
        async with self.lock:
            for seq, kind, value in purge.pending_requests(self.run_dir, self.done):
                self.done = seq
                try:
                    count = await self.proxy.cache.purge(kind, value)
                except Exception as err:  # answer anyway: the supervisor must not wait for it
                    log.error("cache purge %d failed: %r", seq, err)
                    count = 0
                purge.write_answer(self.run_dir, seq, os.getpid(), count)


def _reload(worker: Proxy, config_path: str, source: str) -> None:
    try:
        config = _load(config_path, source)
    except (ConfigError, OSError) as err:
        log.error("reload refused, keeping the running config:\n%s", err)
        return
    worker.reload(config)
    # Reopen the access log: its settings may have changed, or logrotate moved the file.
    old = worker.access_log
    try:
        worker.access_log = AccessLog(config.access_log)
    except OSError as err:
        log.error("access_log.path %s: %s; keeping the old log", config.access_log.path, err)
    else:
        old.close()
    log.info("worker %d reloaded %s", os.getpid(), source)


def main() -> None:
    parser = argparse.ArgumentParser(prog="lb.worker")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--source", help="the file the config came from, named in messages")
    parser.add_argument("--ready-fd", type=int, help="write one line here once serving")
    args = parser.parse_args()
    logging.basicConfig(
        level=os.environ.get("LB_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s [worker {os.getpid()}] %(name)s: %(message)s",
    )
    reseed_request_ids()
    install_best_loop()
    # What the imports made (about 60k objects: modules, classes, functions) lives as long as
    # the process: kept out of the cyclic GC's sight, so an occasional full collection scans
    # what requests made, not all of it (13 ms -> well under 1 ms, a pause every connection of
    # the worker would wait through). Config and runtime objects are made after this, so a
    # reload's garbage is still collected.
    gc.freeze()
    asyncio.run(serve(args.config, args.source, args.ready_fd))


if __name__ == "__main__":
    main()

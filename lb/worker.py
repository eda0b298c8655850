"""A worker process: `python -m lb.worker -c FILE`, started by the supervisor.

It serves the config on uvloop (when installed) until SIGTERM or SIGINT, then drains; SIGHUP
reloads the config file (a config that fails validation is refused and the old one kept).
It also exits, draining, when its supervisor disappears, so no orphan keeps a port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from lb.config import ConfigError, load_config
from lb.core.http import reseed_request_ids
from lb.loops import install_best_loop
from lb.proxy.server import Worker

log = logging.getLogger("lb.worker")


async def serve(config_path: str) -> None:
    config = load_config(config_path)
    worker = Worker(config)
    await worker.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(worker, config_path))
    parent = os.getppid()
    log.info("worker %d serving %s", os.getpid(), config_path)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            if os.getppid() != parent:
                log.warning("supervisor %d is gone; worker %d stops", parent, os.getpid())
                break
    grace = worker.runtime.config.defaults.shutdown_grace
    log.info("worker %d draining (up to %.0fs)", os.getpid(), grace)
    await worker.shutdown(grace)
    log.info("worker %d stopped", os.getpid())


def _reload(worker: Worker, config_path: str) -> None:
    try:
        config = load_config(config_path)
    except ConfigError as err:
        log.error("reload refused, keeping the running config:\n%s", err)
        return
    worker.reload(config)
    log.info("worker %d reloaded %s", os.getpid(), config_path)


def main() -> None:
    parser = argparse.ArgumentParser(prog="lb.worker")
    parser.add_argument("-c", "--config", required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=os.environ.get("LB_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s [worker {os.getpid()}] %(name)s: %(message)s",
    )
    reseed_request_ids()
    install_best_loop()
    asyncio.run(serve(args.config))


if __name__ == "__main__":
    main()

"""`lb worker [-c FILE] [--queue NAME] [--concurrency N] [--metrics HOST:PORT]`: consume the
config's queues on Redis, sending each job to its route's pool.

The process builds a `Proxy` for the config without listening (`start_upstreams`): the
pools, their balancing, active health checks (probed here), TLS to servers and kept-alive
connections are those of `lb run`. Any number of `lb worker` processes, on any host, share
the queues through Redis Streams consumer groups.

`--metrics` serves the process's own Prometheus metrics (lb_queue_jobs_total, the
lb_queue_lag_seconds and lb_queue_job_duration_seconds histograms, its pools' servers) at
/metrics, for a scrape job of its own: an `lb worker` is no part of `lb run`'s /metrics.

Signals: SIGTERM/SIGINT stop claiming and let the jobs under way finish for
`defaults.shutdown_grace` (a job cut short is run again by another worker after its
`ack_timeout`); SIGHUP reloads the file (queues added or removed follow). Exit status: 0 after
a stop, 1 for a config that does not load, 2 when there is nothing to consume (no `redis:`,
no queues, or an unknown `--queue`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from lb.config import Config, ConfigError, load_config
from lb.loops import install_best_loop
from lb.offload.consumer import Consumers

log = logging.getLogger("lb.offload")


def usable(config: Config, queue: str | None) -> str | None:
    """Why `lb worker` cannot run this config, or None."""
    if not config.queues:
        return "the config has no queues: nothing to consume"
    if queue is not None and queue not in config.queues:
        return f"unknown queue {queue!r} (queues: {', '.join(config.queues)})"
    if config.redis is None:
        return (
            "the config has no redis: section; without Redis the workers of `lb run` run "
            "the jobs themselves (add redis: {url: ...} to share queues with lb worker processes)"
        )
    return None


def main(path: str, queue: str | None, concurrency: int | None, metrics: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(path)
    except ConfigError as err:
        print(err.report(path), file=sys.stderr)
        return 1
    refusal = usable(config, queue)
    if refusal is not None:
        print(f"lb worker: {refusal}", file=sys.stderr)
        return 2
    if metrics is not None:
        refused = serve_metrics(metrics)
        if refused is not None:
            print(f"lb worker: --metrics {metrics}: {refused}", file=sys.stderr)
            return 1
    install_best_loop()
    asyncio.run(serve(path, config, queue, concurrency))
    return 0


def serve_metrics(bind: str) -> str | None:
    """prometheus-client's exposition server, on a thread of its own; why it cannot, or None."""
    from prometheus_client import start_http_server

    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return "give HOST:PORT, e.g. 127.0.0.1:9902"
    try:
        start_http_server(int(port), addr=host.strip("[]"))
    except OSError as err:
        return err.strerror or str(err)
    log.info("metrics on http://%s/metrics", bind)
    return None


async def serve(path: str, config: Config, queue: str | None, concurrency: int | None) -> None:
    from lb.proxy.proxy import Proxy

    proxy = Proxy(config)
    await proxy.start_upstreams()
    consumers = Consumers(proxy, [queue] if queue else None, concurrency)
    consumers.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(proxy, consumers, path))
    await stop.wait()
    grace = proxy.runtime.config.defaults.shutdown_grace
    log.info("lb worker stopping: jobs under way have %gs to finish", grace)
    await consumers.stop(grace)
    await proxy.shutdown(0)
    log.info("lb worker stopped")


def _reload(proxy: object, consumers: Consumers, path: str) -> None:
    from lb.proxy.proxy import Proxy

    assert isinstance(proxy, Proxy)
    try:
        config = load_config(path)
    except (ConfigError, OSError) as err:
        log.error("reload refused, keeping the running config:\n%s", err)
        return
    proxy.reload(config)
    consumers.start()

"""Queue offload benchmarks, with a private redis-server: `python -m benchmarks.offload`.

1. enqueue: wrk against an offloaded route of `lb run --workers 1` (Redis queues): 202s per
   second per lb worker (no consumer runs on that queue, so this is the accept path alone:
   whole request read, envelope, one Lua script on Redis, the 202), and the CPU time the lb
   processes and redis-server spent per 202 (from /proc: steadier than the rate when other
   programs share the CPUs).
2. end-to-end: one `lb worker` on another queue; for each of N no-op jobs (GET /small on the
   origin), the time from sending the request to the 202, and from sending it to the moment
   GET /_lb/jobs/{id} first returns the stored response (polled back to back, one client).

Everything listens on 127.0.0.1; every process is stopped by its PID; loops are bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import procs

REPO = Path(__file__).resolve().parents[1]


def config_text(port: int, admin: int, origin: int, redis_port: int) -> str:
    return f"""version: 1
listeners: {{web: {{bind: "127.0.0.1:{port}", mode: http}}}}
routes:
  - {{name: bulk, match: {{path_prefix: /bulk/}}, pool: origin, offload: {{queue: bulk}}}}
  - {{name: noop, match: {{path_prefix: /small}}, pool: origin, offload: {{queue: noop}}}}
pools:
  origin: {{servers: [{{address: "127.0.0.1:{origin}"}}]}}
queues:
  bulk: {{max_length: 100000000, result_ttl: 60s}}
  noop: {{result_ttl: 60s}}
redis: {{url: "redis://127.0.0.1:{redis_port}/0", timeout: 1s}}
admin: {{bind: "127.0.0.1:{admin}"}}
access_log: {{enabled: false}}
"""


def wrk(url: str, seconds: int, connections: int, threads: int) -> tuple[float, int, str]:
    """Requests per second, how many requests, and wrk's report."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    total = re.search(r"(\d+) requests in", out)
    return float(match.group(1)), int(total.group(1)) if total else 0, out


def end_to_end(port: int, jobs: int) -> tuple[list[float], list[float]]:
    accepted, ready = [], []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(jobs):
        start = time.perf_counter()
        conn.request("POST", "/small", body=b"")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 202, (response.status, body)
        accepted.append(time.perf_counter() - start)
        location = json.loads(body)["location"]
        deadline = start + 10
        while time.perf_counter() < deadline:
            conn.request("GET", location)
            response = conn.getresponse()
            response.read()
            if response.getheader("retry-after") is None:
                assert response.status == 200, response.status
                break
        else:
            raise RuntimeError(f"{location} not done within 10s")
        ready.append(time.perf_counter() - start)
    conn.close()
    return accepted, ready


def ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="wrk seconds [%(default)s]")
    parser.add_argument("--connections", type=int, default=64, help="[%(default)s]")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads [%(default)s]")
    parser.add_argument("--jobs", type=int, default=200, help="end-to-end jobs [%(default)s]")
    args = parser.parse_args(argv)
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            print(f"benchmarks.offload: {tool} is not installed", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="lb-bench-offload-"))
    logs = workdir / "logs"
    started: list[procs.Process] = []
    try:
        redis_port, origin_port, port, admin = procs.free_ports(4)
        redis = procs.start(
            "redis",
            [
                *("redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
            ],
            logs,
        )
        started.append(redis)
        procs.wait_for_port(redis, "127.0.0.1", redis_port, 10)
        origin = procs.start(
            "origin",
            [sys.executable, "-m", "benchmarks.origin", "--port", str(origin_port)],
            logs,
            cwd=REPO,
        )
        started.append(origin)
        procs.wait_for_port(origin, "127.0.0.1", origin_port, 10)
        config = workdir / "lb.yaml"
        config.write_text(config_text(port, admin, origin_port, redis_port))
        lb = procs.start(
            "lb",
            [sys.executable, "-m", "lb", "run", "-c", str(config), "--workers", "1"],
            logs,
            cwd=REPO,
        )
        started.append(lb)
        procs.wait_for_port(lb, "127.0.0.1", port, 20)

        before = procs.cpu_snapshot([lb.pid]), procs.cpu_snapshot([redis.pid])
        rate, total, out = wrk(
            f"http://127.0.0.1:{port}/bulk/small", args.duration, args.connections, args.threads
        )
        lb_cpu = procs.cpu_delta(before[0], procs.cpu_snapshot([lb.pid]))
        redis_cpu = procs.cpu_delta(before[1], procs.cpu_snapshot([redis.pid]))
        print(f"enqueue: {rate:,.0f} 202s/s with 1 lb worker ({args.connections} connections)")
        if total:
            print(
                f"  CPU per 202: lb {lb_cpu / total * 1e6:.0f} us, "
                f"redis-server {redis_cpu / total * 1e6:.0f} us "
                f"({total:,} requests; lb {lb_cpu:.1f} s, redis-server {redis_cpu:.1f} s)"
            )
        print("\n".join("  " + line for line in out.strip().splitlines()[1:8]))

        worker = procs.start(
            "lb-worker",
            [sys.executable, "-m", "lb", "worker", "-c", str(config), "--queue", "noop"],
            logs,
            cwd=REPO,
        )
        started.append(worker)
        accepted, ready = end_to_end(port, args.jobs)
        print(
            f"end-to-end, {args.jobs} no-op jobs one at a time: 202 in "
            f"p50 {ms(accepted, 0.5)} ms / p99 {ms(accepted, 0.99)} ms; result ready in "
            f"p50 {ms(ready, 0.5)} ms / p99 {ms(ready, 0.99)} ms "
            f"(mean {statistics.mean(ready) * 1000:.2f} ms)"
        )
        return 0
    finally:
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Queue offload across real processes with a real redis-server: `lb run` accepts (202),
`lb worker` processes run the jobs. A worker SIGKILLed mid-job, a Redis restart, dead letters
and their replay, idempotency, expiry, and the 503s. Without Redis, the workers of `lb run`
share one job directory: every job URL answers on every worker, a job of a killed worker is
taken over, dead letters are replayed through the admin API."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.integration.helpers import (
    REPO,
    LbProcess,
    Origin,
    RefusedPort,
    free_port,
    get_json,
    lb_env,
    request,
    wait_for,
    write_config,
)


@pytest.fixture
def refused_port() -> Iterator[RefusedPort]:
    port = RefusedPort()
    yield port
    port.release()


def release(port: RefusedPort) -> int:
    port.release()
    return port.port


def offload_yaml(redis: RedisServer | None, pool: str = "app", **queue: str) -> dict[str, str]:
    settings = {"ack_timeout": "3s", "job_timeout": "2s", "backoff": "{base: 50ms, max: 100ms}"}
    settings.update(queue)
    body = ", ".join(f"{k}: {v}" for k, v in settings.items())
    extra = f"queues:\n  reports: {{{body}}}\n"
    if redis is not None:
        extra += f'redis: {{url: "{redis.url}", timeout: 200ms, probe_interval: 100ms}}\n'
    return {
        "extra_routes": (
            f"  - {{name: reports, match: {{path_regex: '^/(reports/|slow)'}}, pool: {pool}, "
            "offload: {queue: reports}}\n"
        ),
        "extra": extra,
    }


@contextlib.contextmanager
def offload_lb(
    tmp_path: Path, extra_pools: str = "", workers: int = 2, **config: str
) -> Iterator[tuple[LbProcess, Origin]]:
    with Origin("a") as origin:
        port, admin_port = free_port(), free_port()
        path = write_config(
            tmp_path / "lb.yaml",
            [origin.address],
            port=port,
            admin_port=admin_port,
            extra_pools=extra_pools,
            **config,
        )
        with LbProcess(path, port, admin_port, workers) as lb:
            yield lb, origin


class LbWorker:
    """`python -m lb worker -c CONFIG`, stopped (or killed) by its PID."""

    def __init__(self, config: Path, *args: str) -> None:
        self.log_path = config.with_suffix(f".worker{free_port()}.log")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lb", "worker", "-c", str(config), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=lb_env(),
                cwd=REPO,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@contextlib.contextmanager
def lb_worker(config: Path, *args: str) -> Iterator[LbWorker]:
    worker = LbWorker(config, *args)
    try:
        yield worker
    finally:
        worker.stop()


def offload(
    port: int, path: str, body: bytes = b"", **headers: str
) -> tuple[int, dict[str, str], Any]:
    status, fields, data = request(port, path, "POST", headers=headers, body=body)
    return status, fields, json.loads(data) if status == 202 else data


def serving_worker(port: int, conn: http.client.HTTPConnection, pids: list[int]) -> int | None:
    """Which of the `pids` holds the server side of `conn` (open, to lb on `port`): the socket
    inode in /proc/net/tcp for that pair of ports, among the processes' fds."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (
                int(local.split(":")[1], 16) == port
                and int(remote.split(":")[1], 16) == client_port
            ):
                inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
    return None


def get_on(port: int, path: str, pids: list[int]) -> tuple[int, dict[str, str], bytes, int | None]:
    """GET on a new connection: the answer, and which worker (of `pids`) answered it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        worker = serving_worker(port, conn, pids)  # (the connection is kept alive: still there)
        fields = {k.lower(): v for k, v in response.getheaders()}
        return response.status, fields, body, worker
    finally:
        conn.close()


def jobs_dir(lb: LbProcess) -> Path:
    """The job directory the supervisor gave its workers (LB_JOBS_DIR)."""
    pid = lb.worker_pids()[0]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    found = [e.partition(b"=")[2] for e in environ if e.startswith(b"LB_JOBS_DIR=")]
    assert found, "no LB_JOBS_DIR in a worker's environment"
    return Path(found[0].decode())


def result(port: int, location: str, timeout: float = 20.0) -> tuple[int, dict[str, str], bytes]:
    def done() -> tuple[int, dict[str, str], bytes] | None:
        status, fields, body = request(port, location)
        return (status, fields, body) if "retry-after" not in fields else None

    return wait_for(done, timeout, what=f"the result of {location}")  # type: ignore[no-any-return]


def test_a_job_whose_worker_is_killed_mid_run_completes_on_another(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with offload_lb(tmp_path, **offload_yaml(redis_server)) as (lb, origin):
        status, fields, doc = offload(lb.port, "/slow?s=1")
        assert status == 202 and fields["location"] == doc["location"]
        with lb_worker(lb.config) as first:
            wait_for(lambda: origin.hits["/slow?s=1"] == 1, what=f"a run:\n{first.log()}")
            first.kill()  # mid-job: the origin is still sleeping on it
        job = get_json(lb.port, doc["location"])
        assert job["status"] == "running"
        with lb_worker(lb.config) as second:
            status, fields, body = result(lb.port, doc["location"])
            assert status == 200, second.log()
        assert fields["x-lb-job"] == doc["id"] and body == b"origin a /slow?s=1\n"
        assert origin.hits["/slow?s=1"] == 2


def test_lb_worker_serves_its_own_metrics(tmp_path: Path, redis_server: RedisServer) -> None:
    """`lb worker --metrics HOST:PORT`: the jobs it ran, by outcome, and how long they took."""
    metrics_port = free_port()
    with offload_lb(tmp_path, **offload_yaml(redis_server)) as (lb, _origin):
        status, _, doc = offload(lb.port, "/reports/1")
        assert status == 202
        with lb_worker(lb.config, "--metrics", f"127.0.0.1:{metrics_port}") as worker:
            assert result(lb.port, doc["location"])[0] == 200, worker.log()

            def scraped() -> str | None:
                status, _, body = request(metrics_port, "/metrics")
                text = body.decode()
                return text if status == 200 and "lb_queue_jobs_total{" in text else None

            text = wait_for(scraped, what=f"the worker's /metrics:\n{worker.log()}")
        assert 'lb_queue_jobs_total{outcome="done",queue="reports"} 1.0' in text
        assert 'lb_queue_job_duration_seconds_count{outcome="done",queue="reports"} 1.0' in text
        taken = LbWorker(lb.config, "--metrics", f"127.0.0.1:{lb.port}")  # lb's own port
        assert taken.proc.wait(20) == 1 and "--metrics" in taken.log()


def test_jobs_accepted_before_a_redis_restart_all_run(
    tmp_path: Path, redis_server_durable: RedisServer
) -> None:
    with offload_lb(tmp_path, **offload_yaml(redis_server_durable)) as (lb, origin):
        locations = []
        for i in range(20):
            status, _, doc = offload(lb.port, f"/reports/{i}")
            assert status == 202
            locations.append(doc["location"])
        queues = get_json(lb.admin_port, "/api/v1/queues")
        assert queues["store"] == "redis" and queues["queues"]["reports"]["depth"] == 20
        redis_server_durable.stop()

        def refused() -> bool:
            status, fields, _ = offload(lb.port, "/reports/during")
            return status == 503 and fields["x-lb-error"] == "queue_unavailable"

        wait_for(refused, what="503 queue_unavailable while redis is down")
        status, fields, body = offload(lb.port, "/reports/during")
        assert fields.get("retry-after") and b"queue reports cannot be reached" in body
        assert request(lb.port, "/not-offloaded")[0] == 200  # other routes keep proxying
        redis_server_durable.start()
        with lb_worker(lb.config, "--concurrency", "4"):
            for location in locations:
                status, _, body = result(lb.port, location)
                assert status == 200 and body.startswith(b"origin a /reports/")
        assert sum(origin.hits[f"/reports/{i}"] for i in range(20)) == 20


def test_a_failing_job_lands_in_the_dead_letters_and_replay_brings_it_back(
    tmp_path: Path, redis_server: RedisServer, refused_port: RefusedPort
) -> None:
    flaky = refused_port  # nothing listens there yet: every connect is refused
    pools = f'  flaky: {{servers: [{{address: "127.0.0.1:{flaky.port}"}}]}}\n'
    config = offload_yaml(redis_server, pool="flaky", max_attempts="2")
    with offload_lb(tmp_path, extra_pools=pools, **config) as (lb, _):
        with lb_worker(lb.config) as worker:
            status, _, doc = offload(lb.port, "/reports/r1")
            assert status == 202
            failed = wait_for(
                lambda: (j := get_json(lb.port, doc["location"]))["status"] == "failed" and j,
                what=f"the job to fail:\n{worker.log()}",
            )
            assert failed["attempt"] == 2 and "connect" in failed["reason"]
            queues = get_json(lb.admin_port, "/api/v1/queues")["queues"]["reports"]
            assert queues["dead"] == 1 and queues["depth"] == 0
            with Origin("late", port=release(flaky)) as late:
                status, _, body = request(
                    lb.admin_port, "/api/v1/queues/reports/dead/replay", "POST"
                )
                assert status == 200 and json.loads(body) == {"queue": "reports", "replayed": 1}
                status, _, body = result(lb.port, doc["location"])
                assert status == 200 and body == b"origin late /reports/r1\n"
                assert late.total == 1
        metrics = lb.metrics()
        assert 'lb_queue_jobs_total{outcome="accepted",queue="reports"}' in metrics


def test_idempotency_expiry_and_queue_full_with_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = offload_yaml(redis_server, result_ttl="1s", max_length="3")
    with offload_lb(tmp_path, **config) as (lb, origin):
        key = {"Idempotency-Key": "order-7"}
        # (Bodies left empty: the test origin does not read them, on kept-alive connections.)
        first = offload(lb.port, "/reports/pay", **key)
        again = offload(lb.port, "/reports/pay", **key)
        assert first[0] == again[0] == 202 and first[2] == again[2]
        conflict = offload(lb.port, "/reports/pay?amount=200", **key)
        assert conflict[0] == 422 and conflict[1]["x-lb-error"] == "idempotency_conflict"
        assert offload(lb.port, "/reports/2")[0] == 202
        assert offload(lb.port, "/reports/3")[0] == 202
        full = offload(lb.port, "/reports/4")
        assert full[0] == 503 and full[1]["x-lb-error"] == "queue_full" and full[1]["retry-after"]
        with lb_worker(lb.config):
            status, _, body = result(lb.port, first[2]["location"])
            assert status == 200 and body == b"origin a /reports/pay\n"
            assert origin.hits["/reports/pay"] == 1
            wait_for(
                lambda: request(lb.port, first[2]["location"])[0] == 404,
                what="the result to expire after result_ttl",
            )
        status, fields, body = request(lb.port, first[2]["location"])
        assert fields["x-lb-error"] == "job_not_found" and b"result_ttl" in body


def test_without_redis_lb_run_runs_the_jobs_itself(tmp_path: Path) -> None:
    with offload_lb(tmp_path, workers=1, **offload_yaml(None)) as (lb, _):
        status, _, doc = offload(lb.port, "/reports/local")
        assert status == 202
        status, _, body = result(lb.port, doc["location"])
        assert status == 200 and body == b"origin a /reports/local\n"
        queues = get_json(lb.admin_port, "/api/v1/queues")
        assert queues["store"] == "files" and "reports" in queues["queues"]
        status, _, body = request(lb.admin_port, "/api/v1/queues/reports/dead/replay", "POST")
        assert status == 200 and json.loads(body) == {"queue": "reports", "replayed": 0}
        assert "reports" in lb.status()["queues"]


def test_lb_worker_refuses_a_config_without_redis(tmp_path: Path) -> None:
    with Origin("a") as origin:
        path = write_config(
            tmp_path / "lb.yaml",
            [origin.address],
            port=free_port(),
            admin_port=free_port(),
            **offload_yaml(None),
        )
        worker = LbWorker(path)
        assert worker.proc.wait(20) == 2
        assert "no redis" in worker.log()


def test_without_redis_every_worker_answers_for_every_job_and_runs_it_once(
    tmp_path: Path,
) -> None:
    config = offload_yaml(None, ack_timeout="30s", job_timeout="5s")
    with offload_lb(tmp_path, workers=2, **config) as (lb, origin):
        pids = lb.worker_pids()
        locations = []
        for i in range(20):  # each on a new connection: both workers accept some
            status, fields, doc = offload(lb.port, f"/reports/{i}")
            assert status == 202 and fields["location"] == doc["location"]
            locations.append(doc["location"])
        answers: list[tuple[int, int | None]] = []  # (status, worker) of every GET
        for i, location in enumerate(locations):
            expected = f"origin a /reports/{i}\n".encode()

            def done(location: str = location) -> bytes | None:
                status, fields, body, worker = get_on(lb.port, location, pids)
                answers.append((status, worker))
                return body if status == 200 and "retry-after" not in fields else None

            assert wait_for(done, 20, what=f"{location}'s result") == expected
            for _ in range(3):  # a few more reads, on more connections
                status, _, body, worker = get_on(lb.port, location, pids)
                answers.append((status, worker))
                assert body == expected
        assert all(status == 200 for status, _ in answers), answers  # never a 404
        answered_by = {worker for _, worker in answers}
        assert set(pids) <= answered_by, f"answered by {answered_by}, workers {pids}"
        assert all(origin.hits[f"/reports/{i}"] == 1 for i in range(20)), origin.hits
        queues = get_json(lb.admin_port, "/api/v1/queues")
        assert queues["store"] == "files"
        assert queues["queues"]["reports"] == {
            "depth": 0,
            "in_flight": 0,
            "oldest_age": 0.0,
            "dead": 0,
        }

        # A worker killed mid-job: the job is taken over (its pid is gone: no ack_timeout wait).
        status, _, doc = offload(lb.port, "/slow?s=2")
        assert status == 202
        running = jobs_dir(lb) / "q" / "reports" / "running"
        wait_for(lambda: origin.hits["/slow?s=2"] == 1, what="the slow job to start")
        tickets = wait_for(lambda: list(running.iterdir()), what="its delivery in running/")
        owner = int(tickets[0].name.split(".")[1])
        assert owner in pids
        os.kill(owner, signal.SIGKILL)
        status, fields, body = result(lb.port, doc["location"], timeout=15)
        assert status == 200 and body == b"origin a /slow?s=2\n" and fields["x-lb-job"] == doc["id"]
        assert origin.hits["/slow?s=2"] == 2
        wait_for(lb.ready, 15, what="the supervisor to restart the killed worker")
        assert owner not in lb.worker_pids()
        metrics = lb.metrics()
        # One publisher (the supervisor): each gauge once, not once per worker.
        assert metrics.count('lb_queue_depth{queue="reports"}') == 1


def test_without_redis_dead_letters_are_replayed_through_the_admin_api(
    tmp_path: Path, refused_port: RefusedPort
) -> None:
    flaky = refused_port  # nothing listens there yet: every connect is refused
    pools = f'  flaky: {{servers: [{{address: "127.0.0.1:{flaky.port}"}}]}}\n'
    config = offload_yaml(None, pool="flaky", max_attempts="2")
    with offload_lb(tmp_path, extra_pools=pools, workers=2, **config) as (lb, _):
        status, _, doc = offload(lb.port, "/reports/r1")
        assert status == 202
        failed = wait_for(
            lambda: (j := get_json(lb.port, doc["location"]))["status"] == "failed" and j,
            what=f"the job to fail:\n{lb.log()}",
        )
        assert failed["attempt"] == 2 and "connect" in failed["reason"]

        def dead() -> Any:
            queues = get_json(lb.admin_port, "/api/v1/queues")
            return queues["queues"]["reports"]["dead"] == 1 and queues

        queues = wait_for(dead, what="the dead letter in /api/v1/queues")
        assert queues["store"] == "files" and queues["queues"]["reports"]["depth"] == 0
        wait_for(
            lambda: 'lb_queue_dead{queue="reports"} 1.0' in lb.metrics(),
            what="lb_queue_dead published by the supervisor",
        )
        with Origin("late", port=release(flaky)) as late:
            status, _, body = request(lb.admin_port, "/api/v1/queues/reports/dead/replay", "POST")
            assert status == 200 and json.loads(body) == {"queue": "reports", "replayed": 1}
            status, _, body = result(lb.port, doc["location"])
            assert status == 200 and body == b"origin late /reports/r1\n"
            assert late.total == 1
        assert get_json(lb.admin_port, "/api/v1/queues")["queues"]["reports"]["dead"] == 0

"""`lb run` with real worker processes: sharing the port, draining on SIGTERM, restarting a
worker that dies, reloading on SIGHUP."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.helpers import free_port, lb_with_origins, request


def _listening_socket_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _socket_inodes_of(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def test_two_workers_share_the_port_and_balance_across_servers(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path) as (lb, (a, b)):
        pids = lb.worker_pids()
        assert len(set(pids)) == 2 and os.getpid() not in pids
        # SO_REUSEPORT: each worker has its own listening socket on the one port.
        listening = _listening_socket_inodes(lb.port)
        assert len(listening) == 2
        for pid in pids:
            assert _socket_inodes_of(pid) & listening, f"worker {pid} does not listen"

        for i in range(20):
            status, _, body = request(lb.port, f"/r{i}")
            assert status == 200 and body.startswith(b"origin ")
        # Each worker runs its own round robin: the two servers differ by at most one each.
        assert a.total + b.total == 20
        assert abs(a.total - b.total) <= 2, (a.total, b.total)


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path, grace="5s") as (lb, _origins):
        result: dict[str, Any] = {}

        def slow() -> None:
            try:
                result["response"] = request(lb.port, "/slow?s=1.5")
            except Exception as err:
                result["error"] = err

        client = threading.Thread(target=slow)
        client.start()
        wait_for(lambda: 'lb_active_connections{listener="web"} 1.0' in lb.metrics(), 5)
        started = time.monotonic()
        lb.signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", lb.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_for(refused, 2, what="new connections to be refused")
        assert client.is_alive(), "the slow request should still be in flight"
        client.join(10)
        assert "error" not in result, result
        status, headers, body = result["response"]
        assert status == 200 and body.startswith(b"origin ")
        assert headers.get("connection") == "close"
        assert lb.wait(timeout=8) == 0
        assert time.monotonic() - started < 5 + 1
        assert "stopped" in lb.log()


def test_a_killed_worker_is_restarted_and_serving_continues(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path) as (lb, _origins):
        victim, survivor = lb.worker_pids()
        os.kill(victim, signal.SIGKILL)

        def restarted() -> Any:
            workers = lb.status()["workers"]
            pids = [w["pid"] for w in workers]
            if victim in pids or not all(w["ready"] for w in workers):
                return None
            return workers

        workers = wait_for(restarted, 10, what="the worker to be restarted")
        assert survivor in [w["pid"] for w in workers]
        assert sorted(w["restarts"] for w in workers) == [0, 1]
        assert f"(pid {victim}) exited with code -9; restarting" in lb.log()
        for i in range(6):
            assert request(lb.port, f"/after{i}")[0] == 200


def test_sighup_applies_a_valid_config_and_refuses_an_invalid_one(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path, names=("a", "b")) as (lb, (a, _b)):
        assert request(lb.port, "/new/x")[2].startswith(b"origin ")
        a_only = f'  only_a: {{servers: [{{address: "{a.address}"}}]}}\n'
        text = lb.config.read_text()
        changed = text.replace(
            "routes:\n", "routes:\n  - {name: new, match: {path_prefix: /new/}, pool: only_a}\n"
        ).replace("admin:", a_only + "admin:")
        lb.config.write_text(changed)
        lb.signal(signal.SIGHUP)
        wait_for(lambda: lb.status()["generation"] == 2, 5, what="the reload")
        # Both workers: several connections, all to server a through the new route.
        wait_for(
            lambda: all(
                request(lb.port, f"/new/{i}")[2].startswith(b"origin a ") for i in range(8)
            ),
            5,
            what="the new route in every worker",
        )

        lb.config.write_text(changed.replace("balance: round_robin", "balance: fastest"))
        lb.signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in lb.log(), 5, what="the refusal in the log")
        assert "pools.app.balance: must be one of" in lb.log()
        assert lb.status()["generation"] == 2
        for i in range(6):
            assert request(lb.port, f"/new/{i}")[2].startswith(b"origin a ")
            assert request(lb.port, f"/other{i}")[0] == 200

        # A worker restarted now serves the last good config, not the broken file.
        os.kill(lb.worker_pids()[0], signal.SIGKILL)
        wait_for(lambda: lb.status()["workers"][0]["restarts"] == 1, 10, what="the restart")
        wait_for(lambda: all(w["ready"] for w in lb.status()["workers"]), 10, what="ready")
        for i in range(6):
            assert request(lb.port, f"/new/{i}")[2].startswith(b"origin a ")


def test_a_reload_moves_a_listener_only_to_a_free_address(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path) as (lb, _origins):
        text = lb.config.read_text()
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = holder.getsockname()[1]
            lb.config.write_text(text.replace(f"127.0.0.1:{lb.port}", f"127.0.0.1:{taken}"))
            lb.signal(signal.SIGHUP)
            wait_for(lambda: "reload refused" in lb.log(), 5, what="the refusal in the log")
            assert f"listeners.web: cannot bind 127.0.0.1:{taken}" in lb.log()
            assert request(lb.port, "/")[0] == 200

        moved = free_port()
        lb.config.write_text(text.replace(f"127.0.0.1:{lb.port}", f"127.0.0.1:{moved}"))
        lb.signal(signal.SIGHUP)
        wait_for(lambda: lb.status()["generation"] == 2, 5, what="the reload")
        wait_for(lambda: request(moved, "/")[0] == 200, 5, what="the moved listener")
        # Each worker applies the reload on its own: the old port is gone once all have.
        wait_for(lambda: _refused(lb.port), 5, what="the old listener to close in every worker")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_sigint_stops_like_sigterm(tmp_path: Path, sig: signal.Signals) -> None:
    with lb_with_origins(tmp_path, workers=1) as (lb, _origins):
        assert request(lb.port, "/")[0] == 200
        lb.signal(sig)
        assert lb.wait(timeout=8) == 0

"""Draining a server at run time: through the admin API under `lb run` (every worker stops
sending it new requests within ~50 ms; requests in flight finish), and in-process."""

from __future__ import annotations

import asyncio
import http.client
import threading
from pathlib import Path

import pytest

from lb.config import load_config_text
from lb.proxy.proxy import Proxy
from tests.conftest import wait_for
from tests.integration.helpers import LbProcess, free_port, request
from tests.resilience.helpers import Origin, admin_post

TOKEN = "s3cret-token"


def config_text(port: int, admin_port: int, servers: list[str]) -> str:
    listed = ", ".join(f'{{address: "{s}"}}' for s in servers)
    return f"""version: 1
defaults: {{shutdown_grace: 5s}}
listeners:
  web: {{bind: "127.0.0.1:{port}", mode: http}}
routes:
  - {{name: default, match: {{}}, pool: app}}
pools:
  app: {{balance: round_robin, servers: [{listed}]}}
admin: {{bind: "127.0.0.1:{admin_port}", token: {TOKEN}}}
"""


def test_drain_and_enable_through_the_admin_api(tmp_path: Path) -> None:
    with Origin("a") as a, Origin("b") as b:
        port, admin_port = free_port(), free_port()
        path = tmp_path / "lb.yaml"
        path.write_text(config_text(port, admin_port, [a.address, b.address]))
        with LbProcess(path, port, admin_port, workers=2) as lb:
            drain = f"/api/v1/pools/app/servers/{a.address}/drain"
            assert admin_post(admin_port, drain)[0] == 401  # the token is required
            assert admin_post(admin_port, drain, "wrong")[0] == 401
            unknown = "/api/v1/pools/app/servers/1.2.3.4:1/drain"
            status, body = admin_post(admin_port, unknown, TOKEN)
            assert status == 404 and "no server" in body["error"]

            # A slow request to `a` is in flight when it is drained: it still finishes.
            slow: list[tuple[int, bytes]] = []

            def slow_request() -> None:
                # Round robin: keep asking until the slow one lands on `a`.
                for _ in range(4):
                    result = request(port, "/slow?s=1")
                    if result[2].startswith(b"origin a"):
                        slow.append((result[0], result[2]))
                        return

            thread = threading.Thread(target=slow_request)
            thread.start()
            wait_for(lambda: a.hits["/slow?s=1"] >= 1, 5, what="the slow request at a")
            status, body = admin_post(admin_port, drain.replace(":", "%3A"), TOKEN)
            assert (status, body["drained"]) == (200, True)

            def only_b(tag: str) -> bool:
                """Ten requests on new connections (so both workers get some) all at b."""
                answers = (request(port, f"/{tag}/{i}")[2] for i in range(10))
                return all(body.startswith(b"origin b") for body in answers)

            # Workers read the flag every 50 ms.
            wait_for(lambda: only_b("probe"), 5, what="every worker to drain a")
            before = a.total
            for i in range(20):
                code, _, data = request(port, f"/after/{i}")
                assert code == 200 and data.startswith(b"origin b"), data
            assert a.total == before  # nothing new reached the drained server
            thread.join(10)
            assert slow and slow[0][0] == 200  # the one in flight finished
            servers = {s["address"]: s for s in lb.status()["pools"]["app"]["servers"]}
            assert servers[a.address]["drained"] is True
            assert servers[b.address]["drained"] is False

            status, body = admin_post(
                admin_port, f"/api/v1/pools/app/servers/{a.address}/enable", TOKEN
            )
            assert (status, body["drained"]) == (200, False)

            def seen() -> set[bytes]:
                return {request(port, f"/back/{i}")[2].split()[1] for i in range(10)}

            wait_for(lambda: seen() == {b"a", b"b"}, 5, what="a back in rotation")
            assert lb.status()["pools"]["app"]["servers"][0]["drained"] is False


@pytest.mark.asyncio
async def test_worker_drain_in_process_keeps_in_flight_and_survives_reload() -> None:
    with Origin("a") as a, Origin("b") as b:
        text = config_text(0, 0, [a.address, b.address]).replace("admin:", "#")
        config = load_config_text(text, "test")
        worker = Proxy(config, reuse_port=False)
        await worker.start()
        try:
            port = worker.addresses["web"][1]
            assert worker.drain("app", a.address)
            assert not worker.drain("app", "10.0.0.1:1")
            assert not worker.drain("nope", a.address)

            def burst() -> set[bytes]:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                try:
                    out = set()
                    for i in range(10):
                        conn.request("GET", f"/{i}")
                        out.add(conn.getresponse().read().split()[1])
                    return out
                finally:
                    conn.close()

            assert await asyncio.to_thread(burst) == {b"b"}
            worker.reload(load_config_text(text.replace("round_robin", "least_conn"), "test"))
            assert await asyncio.to_thread(burst) == {b"b"}  # the drain outlives a reload
            assert worker.drain("app", a.address, drained=False)
            assert await asyncio.to_thread(burst) == {b"a", b"b"}
        finally:
            await worker.shutdown(1.0)

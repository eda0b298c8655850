"""Hot reload under load: a steady stream of requests and an open Upgrade tunnel survive ten
reloads (POST /api/v1/reload and SIGHUP) alternating two valid configs and an invalid one;
listeners are added and removed by a reload."""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
from functools import partial
from pathlib import Path

from tests.conftest import wait_for
from tests.integration.helpers import LbProcess, free_port, request
from tests.resilience.helpers import Origin, Tunnel, admin_post, get


def config_a(port: int, admin_port: int, a: Origin, b: Origin, ws: Origin) -> str:
    return f"""version: 1
defaults: {{shutdown_grace: 5s}}
listeners:
  web: {{bind: "127.0.0.1:{port}", mode: http}}
routes:
  - {{name: ws, match: {{path_prefix: /ws}}, pool: ws}}
  - {{name: default, match: {{}}, pool: app}}
pools:
  app: {{balance: round_robin, servers: [{{address: "{a.address}"}}]}}
  ws: {{servers: [{{address: "{ws.address}"}}]}}
admin: {{bind: "127.0.0.1:{admin_port}"}}
"""


def config_b(port: int, admin_port: int, a: Origin, b: Origin, ws: Origin) -> str:
    return f"""version: 1
defaults: {{shutdown_grace: 5s}}
listeners:
  web: {{bind: "127.0.0.1:{port}", mode: http}}
routes:
  - {{name: ws, match: {{path_prefix: /ws}}, pool: ws}}
  - {{name: only-b, match: {{path_prefix: /b/}}, pool: bee}}
  - {{name: default, match: {{}}, pool: app}}
pools:
  app: {{balance: least_conn, servers: [{{address: "{a.address}"}}, {{address: "{b.address}"}}]}}
  bee: {{servers: [{{address: "{b.address}"}}]}}
  ws: {{servers: [{{address: "{ws.address}"}}]}}
admin: {{bind: "127.0.0.1:{admin_port}"}}
"""


INVALID_ROUTE = "  - {name: broken, match: {}, pool: nowhere}\n"


def test_ten_reloads_under_load_lose_nothing(tmp_path: Path) -> None:
    with Origin("a") as a, Origin("b") as b, Origin("ws") as ws:
        port, admin_port = free_port(), free_port()
        path = tmp_path / "lb.yaml"
        good = [config_b(port, admin_port, a, b, ws), config_a(port, admin_port, a, b, ws)]
        invalid = good[0].replace("routes:\n", "routes:\n" + INVALID_ROUTE)
        path.write_text(good[1])
        with LbProcess(path, port, admin_port, workers=2) as lb:
            tunnel = Tunnel(port)
            assert tunnel.echo(b"hello") == b"hello"
            done = threading.Event()
            results: list[tuple[int, int]] = []  # (ok, failed) per client
            answered = [0] * 4  # requests each client has had an answer (or an error) for
            failures: list[str] = []

            def client(n: int) -> None:
                ok = failed = 0
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    for i in range(1000):  # bounded: at most 1000 requests per client
                        if done.is_set() and ok + failed >= 200:
                            break
                        try:
                            status, body = get(conn, f"/c{n}/{i}")
                        except (OSError, http.client.HTTPException) as err:
                            failed += 1
                            failures.append(f"client {n} request {i}: {err!r}")
                            answered[n] += 1
                            conn.close()
                            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                            continue
                        if status == 200 and body.startswith(b"origin "):
                            ok += 1
                        else:
                            failed += 1
                            failures.append(f"client {n} request {i}: {status} {body[:80]!r}")
                        answered[n] += 1
                        time.sleep(0.002)  # pacing: steady traffic, not a CPU-bound flood
                finally:
                    conn.close()
                    results.append((ok, failed))

            clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
            for thread in clients:
                thread.start()
            refused = 0
            generation = lb.status()["generation"]

            def progressed(since: int) -> bool:
                return sum(answered) >= since + 100

            for i in range(10):
                wait_for(
                    partial(progressed, sum(answered)),
                    what="100 requests through the current generation",
                )
                valid = i % 3 != 2
                path.write_text(good[(i - i // 3) % 2] if valid else invalid)
                if i % 2 == 0:
                    status, body = admin_post(admin_port, "/api/v1/reload")
                    if valid:
                        assert (status, body) == (200, {"reloaded": True})
                    else:
                        assert status == 422 and body["reloaded"] is False
                        assert any("nowhere" in p for p in body["problems"]), body
                        refused += 1
                else:
                    before = lb.log().count("reload refused")
                    lb.signal(signal.SIGHUP)
                    if valid:
                        wait_for(
                            lambda g=generation: lb.status()["generation"] > g, 5, what="reload"
                        )
                    else:
                        wait_for(
                            lambda n=before: lb.log().count("reload refused") > n, 5, what="log"
                        )
                        refused += 1
                if valid:
                    generation = lb.status()["generation"]
                assert tunnel.echo(f"ping {i}".encode()) == f"ping {i}".encode()
            done.set()
            for thread in clients:
                thread.join(30)
            total_ok = sum(ok for ok, _ in results)
            assert not failures, failures[:5]
            assert len(results) == 4 and total_ok >= 800
            assert refused == 3 and generation == 8  # 1 at start + 7 valid reloads
            assert tunnel.echo(b"still open") == b"still open"
            tunnel.close()
            assert "unknown pool 'nowhere'" in lb.log()  # the refusal names the problem


def test_a_reload_adds_and_removes_listeners(tmp_path: Path) -> None:
    with Origin("a") as a:
        port, extra, admin_port = free_port(), free_port(), free_port()
        path = tmp_path / "lb.yaml"
        base = f"""version: 1
listeners:
  web: {{bind: "127.0.0.1:{port}", mode: http}}
EXTRA
routes:
  - {{name: default, match: {{}}, pool: app}}
pools:
  app: {{servers: [{{address: "{a.address}"}}]}}
admin: {{bind: "127.0.0.1:{admin_port}"}}
"""
        path.write_text(base.replace("EXTRA\n", ""))
        with LbProcess(path, port, admin_port, workers=2) as lb:
            path.write_text(
                base.replace("EXTRA", f'  extra: {{bind: "127.0.0.1:{extra}", mode: http}}')
            )
            assert admin_post(admin_port, "/api/v1/reload") == (200, {"reloaded": True})
            wait_for(lambda: request(extra, "/new")[0] == 200, 5, what="the added listener")
            assert "extra" in lb.status()["listeners"]
            # A kept-alive connection on the listener about to go: it keeps its request.
            conn = http.client.HTTPConnection("127.0.0.1", extra, timeout=5)
            conn.request("GET", "/slow?s=0.8")
            wait_for(lambda: a.hits["/slow?s=0.8"] == 1, 5, what="the slow request at the origin")
            path.write_text(base.replace("EXTRA\n", ""))
            assert admin_post(admin_port, "/api/v1/reload") == (200, {"reloaded": True})
            assert conn.getresponse().status == 200  # in flight on the removed listener
            conn.close()

            def closed() -> bool:
                with socket.socket() as sock:
                    return sock.connect_ex(("127.0.0.1", extra)) != 0

            wait_for(closed, 5, what="the removed listener closed")
            assert request(port, "/")[0] == 200
            # A listener moved onto an address in use is refused, with the reason.
            with socket.socket() as busy:
                busy.bind(("127.0.0.1", 0))
                busy.listen()
                taken = busy.getsockname()[1]
                path.write_text(base.replace("EXTRA", f'  extra: {{bind: "127.0.0.1:{taken}"}}'))
                status, body = admin_post(admin_port, "/api/v1/reload")
            assert status == 422 and "listeners.extra" in body["problems"][0], body


async def test_a_reload_keeps_unchanged_servers_and_their_idle_connections() -> None:
    import asyncio

    from lb.config import load_config_text
    from lb.proxy.proxy import Proxy

    with Origin("a") as a, Origin("b") as b, Origin("ws") as ws:
        text_a = config_a(0, 0, a, b, ws).replace("admin:", "#")
        text_b = config_b(0, 0, a, b, ws).replace("admin:", "#")
        worker = Proxy(load_config_text(text_a, "a"), reuse_port=False)
        await worker.start()
        try:
            port = worker.addresses["web"][1]
            assert (await asyncio.to_thread(request, port, "/"))[0] == 200
            server = worker.runtime.pools["app"].servers[0]
            server.state.in_flight += 1  # as if a request were in flight
            idle = list(server.idle)
            assert idle
            worker.reload(load_config_text(text_b, "b"))
            kept = worker.runtime.pools["app"].members[a.address][0]
            assert kept is server and kept.idle == idle and kept.state.in_flight == 1
            server.state.in_flight -= 1
            worker.reload(load_config_text(text_a, "a"))  # b leaves: its sockets close
            assert worker.runtime.pools["app"].servers == [server]
            assert (await asyncio.to_thread(request, port, "/again"))[0] == 200
        finally:
            await worker.shutdown(1.0)

"""deploy/compose: the lb config passes `lb check`, the compose file wires the services to it,
and what README's "Scale-out example" says to try holds, on two real `lb run`s sharing a
redis-server with an `lb worker` and the demo backends (Docker cannot run here: the compose
config is run with its host names replaced by local addresses)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import RedisServer, wait_for
from tests.integration.helpers import REPO, LbProcess, free_port, lb_env, request, run_lb

COMPOSE = REPO / "deploy" / "compose"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE / "docker-compose.yml").read_text()))


def test_compose_lb_config_passes_lb_check() -> None:
    result = run_lb("check", "-c", "deploy/compose/lb.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "deploy/compose/lb.yaml: config OK: 1 listener, 4 routes, 1 pool, 2 servers"
    )
    config = yaml.safe_load((COMPOSE / "lb.yaml").read_text())
    assert config["redis"]["url"] == "redis://redis:6379/0"
    routes = {r["name"]: r for r in config["routes"]}
    assert routes["api"]["rate_limit"]["scope"] == "shared"
    assert "cache" in routes["products"] and "offload" in routes["reports"]


def test_compose_services_use_the_config_the_image_and_the_demo_backends() -> None:
    services = compose()["services"]
    assert {"redis", "app1", "app2", "lb1", "lb2", "worker"} <= set(services)
    for name in ("lb1", "lb2", "worker", "app1", "app2"):
        build = services[name]["build"]
        assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile"
    for name in ("lb1", "lb2", "worker"):
        service = services[name]
        assert service["volumes"] == ["./lb.yaml:/etc/lb/lb.yaml:ro"], name
        assert service["command"][:1] == ["lb"] and "/etc/lb/lb.yaml" in service["command"]
        assert set(service["depends_on"]) == {"redis", "app1", "app2"}, name
    assert services["worker"]["command"][1] == "worker"
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert len({p.rsplit(":", 2)[-2] for p in published}) == len(published), published
    # The config's servers are the demo services, on the ports they serve.
    config = yaml.safe_load((COMPOSE / "lb.yaml").read_text())
    addresses = {s["address"] for s in config["pools"]["app"]["servers"]}
    demo = {
        f"{name}:{services[name]['command'][-1]}"
        for name in ("app1", "app2")
        if services[name]["command"][:4] == ["python", "-m", "lb.demo", "--backends-only"]
    }
    assert addresses == demo
    assert config["redis"]["url"].startswith("redis://redis:")


def test_compose_prometheus_config_loads_the_alert_rules(tmp_path: Path) -> None:
    prometheus = compose()["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert (COMPOSE / "../prometheus/lb-alerts.yml").is_file()
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    assert [f"/etc/prometheus/{f}" for f in config["rule_files"]] == [
        mounts["../prometheus/lb-alerts.yml"]
    ]
    if shutil.which("promtool") is not None:  # laid out as in the container
        shutil.copy(COMPOSE / "prometheus.yml", tmp_path / "prometheus.yml")
        shutil.copy(REPO / "deploy/prometheus/lb-alerts.yml", tmp_path / "lb-alerts.yml")
        result = subprocess.run(
            ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# The example, run ----------------------------------------------------------------------------


@contextlib.contextmanager
def process(*args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python ARGS`, its output in `log`; SIGTERM (then SIGKILL) to its PID at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=lb_env(),
            cwd=REPO,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_demo_backends_only_serve_without_lb_and_stop_on_sigterm(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    args = ["-m", "lb.demo", "--backends-only", "--port", str(ports[0]), "--port", str(ports[1])]
    with process(*args, log=tmp_path / "demo.log") as proc:
        for port in ports:
            wait_for(lambda port=port: request(port, "/x")[0] == 200, what=f"backend :{port}")
            assert json.loads(request(port, "/x")[2])["backend"] == f"demo-{port}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    for port in ports:
        with contextlib.suppress(ConnectionRefusedError):
            request(port, "/x", timeout=1)
            raise AssertionError(f"a demo backend still listens on {port}")


def local_config(tmp_path: Path, name: str, redis: str, backends: list[int]) -> LbProcess:
    """deploy/compose/lb.yaml with the compose host names replaced by local addresses."""
    port, admin_port = free_port(), free_port()
    text = (COMPOSE / "lb.yaml").read_text()
    for old, new in {
        '"0.0.0.0:8080"': f'"127.0.0.1:{port}"',
        '"0.0.0.0:9901"': f'"127.0.0.1:{admin_port}"',
        '"app1:9001"': f'"127.0.0.1:{backends[0]}"',
        '"app2:9002"': f'"127.0.0.1:{backends[1]}"',
        '"redis://redis:6379/0"': f'"{redis}"',
        'path: "-"': f'path: "{tmp_path / (name + ".access.log")}"',
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return LbProcess(path, port, admin_port, workers=2)


def test_the_scale_out_example_shares_cache_rate_limit_and_jobs(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    backends = [free_port(), free_port()]
    demo = ["-m", "lb.demo", "--backends-only", *(f"--port={p}" for p in backends)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(*demo, log=tmp_path / "demo.log"))
        for port in backends:
            wait_for(lambda port=port: request(port, "/")[0] == 200, what=f"backend :{port}")
        lb1 = stack.enter_context(local_config(tmp_path, "lb1", redis_server.url, backends))
        lb2 = stack.enter_context(local_config(tmp_path, "lb2", redis_server.url, backends))
        stack.enter_context(
            process("-m", "lb", "worker", "-c", str(lb1.config), log=tmp_path / "worker.log")
        )

        # A response cached by one instance is a HIT on the other (the same Host: it is part
        # of the cache key). lb1 writes it to Redis just after answering.
        shop = {"host": "shop.example"}
        status, headers, body = request(lb1.port, "/products/42", headers=shop)
        assert (status, headers["x-cache"]) == (200, "MISS")
        # The stored value's key (c:v:), not the collapsed-miss lock's (c:l:), which holds the
        # same URI while lb1 is still fetching it.
        wait_for(
            lambda: redis_server.command("KEYS", "*c:v:*shop.example/products/42*") != b"*0",
            what="the entry in redis",
        )
        status, headers, again = request(lb2.port, "/products/42", headers=shop)
        assert (status, headers["x-cache"]) == (200, "HIT")
        assert again == body  # lb1's response, X-Request-ID and all
        assert request(lb2.port, "/products/42")[1]["x-cache"] == "MISS"  # another Host

        # 5 requests a minute per API key, whichever instance they reach.
        key = {"x-api-key": "demo"}
        codes = [request(lb.port, "/api/orders", headers=key)[0] for lb in [lb1, lb2] * 4]
        assert codes == [200] * 5 + [429] * 3
        assert request(lb2.port, "/api/orders", headers={"x-api-key": "other"})[0] == 200

        # A job accepted by lb1 is run by lb worker and read from lb2.
        status, headers, body = request(lb1.port, "/reports/monthly", method="POST")
        assert status == 202, body
        location = headers["location"]
        assert json.loads(body)["location"] == location

        def result() -> Any:
            status, _, body = request(lb2.port, location)
            assert status == 200, (status, body)  # the job's status, then its result
            answer = json.loads(body)
            return "backend" in answer and answer

        done = wait_for(result, 15, what="the job's result on lb2")
        assert done["request"] == "POST /reports/monthly HTTP/1.1"

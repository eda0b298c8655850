"""The `lb` command as a user runs it: `lb check`, `lb run` refusing to start, `lb demo`."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lb.demo import port_taken
from tests.conftest import wait_for
from tests.integration.helpers import REPO, free_port, lb_env, request, run_lb, write_config

BROKEN = """\
version: 1
listeners:
  web: {bind: "127.0.0.1:8080", mode: htp}
routes:
  - name: api
    match: {path_prefix: /api/}
    pool: app
  - name: default
    match: {}
    pol: app
pools:
  app:
    balance: round
    servers: [{address: "127.0.0.1:9001"}]
"""


def test_check_valid_config_prints_one_line_summary() -> None:
    result = run_lb("check", "-c", "config/lb.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines == ["config/lb.yaml: config OK: 1 listener, 4 routes, 1 pool, 2 servers"]


def test_check_broken_config_prints_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = run_lb("check", "-c", str(path))
    assert result.returncode == 1
    output = result.stdout + result.stderr
    problems = [line for line in output.splitlines() if re.search(r"\(line \d+\)$", line)]
    assert problems == [
        "listeners.web.mode: must be one of: http, tcp, udp (got 'htp') "
        "(did you mean 'http'?) (line 3)",
        "routes[1].pol: unknown key 'pol' (did you mean 'pool'?) (line 10)",
        "pools.app.balance: must be one of: round_robin, least_conn, random, p2c, ip_hash, "
        "hash (got 'round') (did you mean 'round_robin'?) (line 13)",
    ]
    assert "3 problem(s)" in output


def test_check_reports_schema_and_unknown_pool_problems_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        "version: 1\n"
        "listeners:\n"
        '  web: {bind: "127.0.0.1:8080", mode: htp}\n'
        "routes:\n"
        "  - {match: {}, pool: api-v3}\n"
        "pools:\n"
        '  app: {servers: [{address: "127.0.0.1:9001"}]}\n'
    )
    result = run_lb("check", "-c", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}: 2 problem(s)",
        "listeners.web.mode: must be one of: http, tcp, udp (got 'htp') (did you mean 'http'?)"
        " (line 3)",
        "routes[0].pool: unknown pool 'api-v3' (known pools: app) (line 5)",
    ]


def test_check_print_shows_the_effective_config() -> None:
    result = run_lb("check", "-c", "config/lb.yaml", "--print")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["defaults"]["timeouts"]["connect"] == "2s"
    assert printed["listeners"]["web"]["underscores_in_headers"] == "drop"
    assert printed["routes"][1]["retries"]["budget"] == "20%"
    assert printed["pools"]["app"]["servers"][0]["weight"] == 1
    assert printed["access_log"] == {"enabled": True, "path": "-", "format": "json"}
    assert "config OK" in result.stderr


def test_check_missing_file_names_it() -> None:
    result = run_lb("check", "-c", "no/such.yaml")
    assert result.returncode == 1
    assert "cannot read no/such.yaml" in result.stderr


def test_run_refuses_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = run_lb("run", "-c", str(path), "--workers", "1")
    assert result.returncode == 1
    assert "routes[1].pol: unknown key 'pol'" in result.stderr


def test_run_refuses_a_port_that_is_taken(tmp_path: Path) -> None:
    # Workers bind with SO_REUSEPORT; without the supervisor's check a second program holding
    # the port with SO_REUSEPORT too would silently share its traffic with lb.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = write_config(
            tmp_path / "lb.yaml", ["127.0.0.1:1"], port=port, admin_port=free_port()
        )
        result = run_lb("run", "-c", str(path), "--workers", "1")
    assert result.returncode == 1
    assert f"listeners.web: cannot bind 127.0.0.1:{port}" in result.stderr


def test_demo_answers_from_both_backends_and_stops_on_sigint() -> None:
    busy = [p for p in (8080, 9001, 9002, 9901) if port_taken(p)]
    if busy:
        pytest.skip(f"lb demo uses fixed ports; in use here: {busy}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lb", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=lb_env(),
        cwd=REPO,
    )
    try:
        wait_for(lambda: request(8080, "/")[0] == 200, 10, what="lb demo to answer")
        backends = {request(8080, f"/{i}")[2].split(b'"backend": "')[1][:9] for i in range(6)}
        assert backends == {b"demo-9001", b"demo-9002"}
        # The shipped config's cached route works with no redis: the second GET is a HIT.
        assert request(8080, "/products/1")[1]["x-cache"] == "MISS"
        assert request(8080, "/products/1")[1]["x-cache"] == "HIT"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        for port in (8080, 9001, 9002):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def test_version_says_which_build_runs() -> None:
    """`lb --version` names the build: compiled when the hot path's modules are extension
    modules (pip install . with a compiler, or the test script's compiled pass), else plain."""
    import lb.proxy.http.exchange as probe

    result = run_lb("--version")
    assert result.returncode == 0, result.stderr
    compiled = not (probe.__file__ or "").endswith(".py")
    expected = "hot path compiled with mypyc" if compiled else "plain Python"
    assert re.fullmatch(rf"lb \S+ \({expected}\)", result.stdout.strip()), result.stdout

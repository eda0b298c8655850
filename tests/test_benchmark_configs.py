"""The configs the load benchmark gives its subjects are ones they accept: lb's passes
`lb check` (TLS files included), and haproxy's passes `haproxy -c` when haproxy is installed.
A subject that refused its config would show only as `error` in a long run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import configs, procs, tls
from lb.cli import main
from lb.config import load_config
from lb.config.schema import AccessLogConfig


@pytest.mark.parametrize("health", [False, True])
@pytest.mark.parametrize("access_log", [True, False])
def test_lbs_config_passes_lb_check(tmp_path: Path, health: bool, access_log: bool, capsys) -> None:
    files = tls.certificate(tmp_path)
    path = tmp_path / "lb.yaml"
    secure = (18443, files.cert, files.key)
    log = tmp_path / "access.log" if access_log else None
    path.write_text(configs.lb_http(18080, 18081, 18082, log, tls=secure, health=health))
    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr()
    # `lb` runs as shipped: the access log on in its default format, only its file named.
    effective = load_config(path).access_log
    assert effective == AccessLogConfig(enabled=access_log, path=str(log) if log else "-")


def test_a_two_worker_subject_gets_a_spare_cpu_or_shares_the_loads() -> None:
    pinning = procs.Pinning(0, 1)
    cpus, shared = pinning.subject_cpus(2)
    spare = sorted(os.sched_getaffinity(0) - {0, 1})
    assert (cpus, shared) == (([0, spare[0]], False) if spare else ([0, 1], True))
    assert pinning.subject_cpus(1) == ([0], False)
    assert procs.Pinning(None, None).subject_cpus(2) == ([], False)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxys_config_passes_haproxy_check(tmp_path: Path) -> None:
    files = tls.certificate(tmp_path)
    path = tmp_path / "haproxy.cfg"
    path.write_text(configs.haproxy_http(18080, 18081, 1000, tls=(18443, files.pem)))
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr

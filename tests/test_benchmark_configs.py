"""The configs the load benchmark gives its subjects are ones they accept: lb's passes
`lb check` (TLS files included), and haproxy's passes `haproxy -c` when haproxy is installed.
A subject that refused its config would show only as `error` in a long run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import configs, tls
from lb.cli import main


@pytest.mark.parametrize("health", [False, True])
def test_lbs_config_passes_lb_check(tmp_path: Path, health: bool, capsys) -> None:
    files = tls.certificate(tmp_path)
    path = tmp_path / "lb.yaml"
    secure = (18443, files.cert, files.key)
    path.write_text(configs.lb_http(18080, 18081, 18082, None, tls=secure, health=health))
    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxys_config_passes_haproxy_check(tmp_path: Path) -> None:
    files = tls.certificate(tmp_path)
    path = tmp_path / "haproxy.cfg"
    path.write_text(configs.haproxy_http(18080, 18081, 1000, tls=(18443, files.pem)))
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""Smoke test of the load benchmark: `direct` only, one short case, results written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


def test_direct_small_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "benchmarks", "--subjects", "direct", "--cases", "small"]
    argv += ["--duration", "1", "--warmup", "0", "--rounds", "2", "--out", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

    table = (out / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| small keep-alive"))
    rps = row.split("|")[3].strip()
    assert re.fullmatch(r"[\d,]+", rps), row
    assert int(rps.replace(",", "")) > 0

    results = json.loads((out / "results.json").read_text())["results"]
    assert [(r["subject"], r["case"], r["error"]) for r in results] == [("direct", "small", None)]
    assert results[0]["requests"] > 0
    assert len(results[0]["rounds_rps"]) == 2  # the median of two rounds, both kept
    # The kernel's part of the CPU time is a part of it (1 s runs: a few 10 ms ticks each).
    cpu, kernel = results[0]["cpu_us_per_req"], results[0]["kernel_us_per_req"]
    assert cpu is not None and kernel is not None and 0 <= kernel <= cpu

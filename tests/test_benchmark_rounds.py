"""`python -m benchmarks --rounds N`: one row per subject x case, from the median round."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from benchmarks.backend import Origin
from benchmarks.procs import Pinning
from benchmarks.report import table
from benchmarks.runner import Measurement, median_of_rounds
from benchmarks.subjects import RunContext, fresh_dir

REPO = Path(__file__).resolve().parent.parent


def row(subject: str, rps: float | None, p99: float = 1.0, error: str | None = None) -> Measurement:
    return Measurement("small", "small keep-alive", subject, rps=rps, p99_ms=p99, error=error)


def test_the_median_round_is_reported_whole_with_the_spread() -> None:
    rounds = [
        [row("lb", 30_000, p99=3.0), row("haproxy", 60_000)],
        [row("lb", 36_000, p99=2.0), row("haproxy", 64_000)],
        [row("lb", 33_000, p99=9.0), row("haproxy", 62_000)],
    ]
    lb, haproxy = median_of_rounds(rounds)
    # The 33k run, with its own p99: not the median of each column taken apart.
    assert (lb.rps, lb.p99_ms) == (33_000, 9.0)
    assert lb.rounds_rps == [30_000, 36_000, 33_000]
    assert haproxy.rps == 62_000
    text = table([lb, haproxy])
    lb_row = next(line for line in text.splitlines() if "| lb |" in line)
    # req/s stays a bare number; the ratio is taken between the medians; the range comes last.
    expected = "| 33,000 | — | 9.00 | — | — | — | — | 0.53 | 30,000 to 36,000 |"
    assert lb_row.endswith(expected), lb_row


def test_an_even_count_takes_a_real_run_not_an_average() -> None:
    (lb,) = median_of_rounds([[row("lb", 10.0)], [row("lb", 20.0)]])
    assert lb.rps == 10.0


def test_a_pair_that_failed_in_any_round_shows_the_error() -> None:
    rounds = [[row("lb", 30_000)], [row("lb", None, error="lb exited during the run")]]
    (lb,) = median_of_rounds(rounds)
    assert lb.error == "lb exited during the run"


def test_one_round_is_left_as_it_is() -> None:
    only = [row("lb", 1.0)]
    assert median_of_rounds([only]) is only
    assert "rounds" not in table(only)


def test_each_start_gets_a_fresh_directory(tmp_path: Path) -> None:
    """A subject starts once per round: its second start must not meet the first's files."""
    ctx = RunContext(tmp_path, tmp_path, cast(Origin, None), Pinning.detect(enabled=False))
    first, second = fresh_dir(ctx, "nginx-proxy"), fresh_dir(ctx, "nginx-proxy")
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith("nginx-proxy-") and not any(second.iterdir())


@pytest.mark.skipif(
    shutil.which("wrk") is None or shutil.which("redis-server") is None,
    reason="needs wrk and redis-server",
)
def test_two_rounds_of_a_subject_with_a_redis_of_its_own(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "benchmarks", "--subjects", "lb-cache-redis"]
    argv += ["--cases", "cache-hit", "--rounds", "2", "--lb-build", "source"]
    argv += ["--duration", "1", "--warmup", "1", "--out", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads((out / "results.json").read_text())["results"]
    assert result["error"] is None, result
    assert len(result["rounds_rps"]) == 2 and min(result["rounds_rps"]) > 0

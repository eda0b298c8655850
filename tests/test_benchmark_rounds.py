"""`python -m benchmarks --rounds N`: one row per subject x case, from the median round."""

from __future__ import annotations

from benchmarks.report import table
from benchmarks.runner import Measurement, median_of_rounds


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
    assert lb_row.endswith("| 33,000 | — | 9.00 | — | — | — | 0.53 | 30,000 to 36,000 |"), lb_row


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

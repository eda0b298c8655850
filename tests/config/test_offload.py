"""`offload` on a route and the `queues` map: defaults, and every problem `lb check` names."""

from __future__ import annotations

import textwrap

import pytest

from lb.config import load_config_text
from tests.conftest import config_problems

BASE = """\
version: 1
listeners: {web: {bind: "127.0.0.1:8080"}}
pools: {app: {servers: [{address: "127.0.0.1:9001"}]}}
"""


def test_defaults() -> None:
    config = load_config_text(
        BASE
        + "routes: [{name: reports, match: {}, pool: app, offload: {queue: reports}}]\n"
        + "queues: {reports: {}}\n"
    )
    route = config.routes[0]
    assert route.offload is not None
    assert (route.offload.queue, route.offload.mode) == ("reports", "always")
    q = config.queues["reports"]
    assert (q.max_attempts, q.backoff.base, q.backoff.max, q.backoff.jitter) == (5, 0.5, 30, "full")
    assert q.retry_on == ["connect_failure", "timeout", 502, 503, 504]
    assert (q.max_length, q.max_body_size, q.owner) == (1000, 1024 * 1024, None)
    assert q.job_timeout < q.ack_timeout


@pytest.mark.parametrize(
    ("routes", "queues", "expected"),
    [
        pytest.param(
            "[{name: r, match: {}, pool: app, offload: {queue: reprots}}]",
            "{reports: {}}",
            ["routes[0].offload.queue: unknown queue 'reprots' (did you mean 'reports'?)"],
            id="unknown-queue",
        ),
        pytest.param(
            "[{name: r, match: {}, pool: app, offload: {queue: q}}]",
            "{}",
            ["routes[0].offload.queue: unknown queue 'q' (no queues are defined)"],
            id="no-queues",
        ),
        pytest.param(
            "[{match: {}, pool: app, offload: {queue: q}}]",
            "{q: {}}",
            ["routes[0]: a route with offload needs a name"],
            id="unnamed-route",
        ),
        pytest.param(
            "[{name: r, match: {}, pool: app, offload: {queue: q, mode: sometimes}}]",
            "{q: {}}",
            ["routes[0].offload.mode: must be one of: always, prefer (got 'sometimes')"],
            id="bad-mode",
        ),
        pytest.param(
            "[{name: r, match: {}, pool: app}]",
            "{q: {job_timeout: 90s, ack_timeout: 60s}}",
            ["queues.q.job_timeout: must be under ack_timeout (60s)"],
            id="job-timeout-over-ack-timeout",
        ),
        pytest.param(
            "[{name: r, match: {}, pool: app}]",
            "{q: {owner: 'session:x'}}",
            ["queues.q.owner: 'session:x': give header:NAME or cookie:NAME"],
            id="bad-owner",
        ),
        pytest.param(
            "[{name: r, match: {}, pool: app}]",
            "{q: {retry_on: [200], max_attempts: 0, backoff: {jitter: some}}}",
            ["queues.q.max_attempts:", "queues.q.backoff.jitter:", "queues.q.retry_on:"],
            id="bad-values",
        ),
    ],
)
def test_problems(routes: str, queues: str, expected: list[str]) -> None:
    problems = config_problems(BASE + f"routes: {routes}\nqueues: {queues}\n")
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)


def test_the_shipped_config_offloads_reports() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "config" / "lb.yaml").read_text()
    config = load_config_text(textwrap.dedent(text))
    offloaded = [r for r in config.routes if r.offload is not None]
    assert offloaded and all(r.offload.queue in config.queues for r in offloaded if r.offload)

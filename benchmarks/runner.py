"""Run every (subject, case) pair: start the subject, warm up, measure load and CPU, stop it.

Subjects run one at a time against one shared origin, so they never compete with each other.
Each subject's processes are stopped in a finally block, whatever happens to a case.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks import procs, wrk
from benchmarks.cases import Case
from benchmarks.subjects import RunContext, Running, Subject


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    connections: int
    threads: int


@dataclass
class Measurement:
    """One row of the results: a subject under one case. `error` set means no numbers."""

    case: str
    case_title: str
    subject: str
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us_per_req: float | None = None
    kernel_us_per_req: float | None = None  # the part of cpu_us_per_req in the kernel
    errors: int | None = None
    requests: int | None = None
    cpu_seconds: float | None = None
    error: str | None = None
    note: str = ""
    wrk: dict[str, float] | None = None
    rounds_rps: list[float] | None = None  # with --rounds: every round's req/s, in run order

    def to_json(self) -> dict[str, object]:
        return asdict(self)


Log = Callable[[str], None]


def probe(url: str, timeout: float = 5.0, expect: tuple[str, str] | None = None) -> str | None:
    """One GET through the subject before loading it: None if it answers 200 (and, with
    `expect` (field, value), that field says that value: a cache's HIT), else why not."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        # The subjects serve a self-signed certificate made for the run: nothing to verify.
        insecure = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=insecure)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"GET {url} failed: {exc!r}"
    finally:
        conn.close()
    if response.status != 200:
        return f"GET {url} answered {response.status}, not 200"
    if expect is not None:
        field, value = expect
        got = response.getheader(field)
        if got is None or got.strip().upper() != value:
            return f"GET {url} answered {field}: {got}, not {value}"
    return None


def run_all(
    ctx: RunContext,
    subjects: list[Subject],
    cases: list[Case],
    settings: Settings,
    log: Log = print,
) -> list[Measurement]:
    script = wrk.write_script(ctx.workdir / "done.lua")
    results: list[Measurement] = []
    total = sum(1 for s in subjects for c in cases if s.skips(c) is None)
    step = 0
    for subject in subjects:
        runnable = [c for c in cases if subject.skips(c) is None]
        for case in cases:
            reason = subject.skips(case)
            if reason is not None:
                log(f"skip {subject.name} x {case.title}: {reason}")
        if not runnable:
            continue
        reason = subject.unavailable()
        if reason is not None:
            log(f"skip {subject.name}: {reason}")
            step += len(runnable)
            continue
        try:
            running = subject.start(ctx)
        except procs.StartError as exc:
            log(f"error: {subject.name} did not start: {exc}")
            results += [
                Measurement(c.name, c.title, subject.name, error=exc.summary) for c in runnable
            ]
            step += len(runnable)
            continue
        try:
            for case in runnable:
                step += 1
                log(f"[{step}/{total}] {subject.name} x {case.title} ...")
                m = _measure(ctx, subject, case, running, settings, script)
                dead = [p.name for p in running.processes if not p.alive()]
                if dead:
                    m.error = m.error or f"{', '.join(dead)} exited during the run (see logs/)"
                results.append(m)
                log(f"[{step}/{total}] {subject.name} x {case.title}: {_summary(m)}")
        finally:
            running.stop()
    return results


def median_of_rounds(rounds: list[list[Measurement]]) -> list[Measurement]:
    """One row per (subject, case) from several rounds of `run_all`: the round with the median
    req/s, whole (its latencies and CPU are that run's, not medians taken apart), with every
    round's req/s beside it. A pair that failed in any round is reported by its first error:
    a median over the rounds that happened to work would hide it."""
    if len(rounds) == 1:
        return rounds[0]
    rows: list[Measurement] = []
    for first in rounds[0]:
        runs = [m for r in rounds for m in r if m.subject == first.subject and m.case == first.case]
        failed = next((m for m in runs if m.error is not None or m.rps is None), None)
        if failed is not None:
            rows.append(failed)
            continue
        ranked = sorted(runs, key=lambda m: m.rps or 0.0)
        # An even count takes the lower middle: a real run, never an average of two.
        median = ranked[(len(ranked) - 1) // 2]
        median.rounds_rps = [m.rps or 0.0 for m in runs]
        rows.append(median)
    return rows


def _measure(
    ctx: RunContext,
    subject: Subject,
    case: Case,
    running: Running,
    settings: Settings,
    script: Path,
) -> Measurement:
    m = Measurement(case.name, case.title, subject.name, note=running.note)
    url = running.targets[case.scheme] + case.path
    problem = probe(url)
    if problem is not None:
        m.error = problem
        return m
    # A cache subject must answer what the case expects (HIT: the warm-up filled the cache),
    # after the warm-up and still after the run; else its figure would be some other path's.
    expect = None
    if subject.cache_status is not None and case.expect_cache is not None:
        expect = (subject.cache_status, case.expect_cache)
    run_wrk = _wrk_runner(url, case, settings, script, ctx.pinning.load_prefix())
    try:
        if settings.warmup > 0:
            run_wrk(settings.warmup)
        if expect is not None and (problem := probe(url, expect=expect)) is not None:
            m.error = f"after the warm-up: {problem}"
            return m
        before = procs.cpu_snapshot(running.cpu_roots)
        started = time.monotonic()
        result = run_wrk(settings.duration)
        after = procs.cpu_snapshot(running.cpu_roots)
        cpu, kernel = procs.cpu_delta(before, after), procs.kernel_delta(before, after)
    except wrk.WrkError as exc:
        m.error = str(exc).splitlines()[0]
        return m
    if expect is not None and (problem := probe(url, expect=expect)) is not None:
        m.error = f"after the run: {problem}"
        return m
    if time.monotonic() - started > settings.duration + 10:
        m.note = (m.note + "; " if m.note else "") + "wrk overran its duration"
    m.rps = result.rps
    m.p50_ms = result.p50_ms
    m.p99_ms = result.p99_ms
    m.errors = result.errors
    m.requests = result.requests
    m.cpu_seconds = cpu
    m.cpu_us_per_req = cpu / result.requests * 1e6 if result.requests else None
    m.kernel_us_per_req = kernel / result.requests * 1e6 if result.requests else None
    m.wrk = {k: float(v) for k, v in asdict(result).items()}
    return m


def _wrk_runner(
    url: str, case: Case, settings: Settings, script: Path, prefix: list[str]
) -> Callable[[float], wrk.WrkResult]:
    def run(duration: float) -> wrk.WrkResult:
        return wrk.run(
            url,
            duration=duration,
            connections=case.connections or settings.connections,
            threads=settings.threads,
            script=script,
            headers=case.headers,
            prefix=prefix,
        )

    return run


def _summary(m: Measurement) -> str:
    if m.error is not None:
        return f"ERROR {m.error}"
    cpu = f"{m.cpu_us_per_req:.1f}" if m.cpu_us_per_req is not None else "n/a"
    return (
        f"{m.rps:,.0f} req/s, p50 {m.p50_ms:.2f} ms, p99 {m.p99_ms:.2f} ms, "
        f"CPU {cpu} us/req, errors {m.errors}"
    )

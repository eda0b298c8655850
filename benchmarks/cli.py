"""`python -m benchmarks` / `lb bench`: parse flags, start the origin, run, report.

Shutdown order (finally blocks): each subject is stopped after its cases (in the runner), then the
origin, then the temporary work dir is removed. Logs of every process stay in `<out>/logs/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from benchmarks import backend, build, procs, report, runner, wrk
from benchmarks.backend import REPO_ROOT
from benchmarks.cases import CACHE_CASES, CASES, DEFAULT_CASES
from benchmarks.subjects import SUBJECTS, RunContext

DEFAULT_SUBJECTS = ("direct", "lb", "lb-nolog", "nginx", "haproxy")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _names(kind: str, known: Mapping[str, object]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {', '.join(unknown)}; choose from {', '.join(known)}"
            )
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Load-benchmark lb against nginx and haproxy with wrk (benchmarks/README.md).",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per case [10]")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each case [2]")
    p.add_argument("--connections", type=int, default=50, help="wrk connections [50]")
    p.add_argument("--threads", type=int, default=1, help="wrk threads [1]")
    p.add_argument(
        "--rounds",
        type=_positive,
        default=1,
        help="run every subject x case this many times, interleaved (round after round), and "
        "report the run with the median req/s [1]",
    )
    p.add_argument(
        "--cases",
        type=_names("case", dict(CASES)),
        default=list(DEFAULT_CASES),
        help=f"comma-separated, from {','.join(CASES)} [{','.join(DEFAULT_CASES)}]",
    )
    p.add_argument(
        "--subjects",
        type=_names("subject", dict(SUBJECTS)),
        default=list(DEFAULT_SUBJECTS),
        help=f"comma-separated, from {','.join(SUBJECTS)} [{','.join(DEFAULT_SUBJECTS)}]",
    )
    p.add_argument("--baseline", default="haproxy", help="subject the req/s ratio is taken to")
    p.add_argument("--out", type=Path, help="results dir [benchmarks/results/<timestamp>/]")
    # lb's access log is on as shipped; `lb-nolog` is the run without it. Kept for old scripts.
    p.add_argument("--lb-access-log", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--lb-health",
        action="store_true",
        help="also run lb with active + passive health checks (subject lb-health, after lb)",
    )
    p.add_argument(
        "--cache",
        action="store_true",
        help="also the cache cases (cache-hit, cache-miss) and the cache subjects (lb-cache, "
        "lb-cache-redis after lb, nginx-cache after nginx)",
    )
    p.add_argument(
        "--origin",
        choices=("auto", "nginx", "python"),
        default="auto",
        help="origin server: nginx if installed, else benchmarks/origin.py [auto]",
    )
    p.add_argument(
        "--lb-build",
        choices=("compiled", "source"),
        default="compiled",
        help="lb as pip install . builds it (the hot path compiled with mypyc, where a C "
        "compiler is), or the source tree as it stands [compiled]",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--start-timeout", type=float, default=10.0, help="seconds a subject has to listen [10]"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(given)
    if args.lb_access_log:
        print("note: --lb-access-log is the default now (subject lb); lb-nolog runs without it")
    if not wrk.available():
        print("error: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    started = dt.datetime.now()
    out: Path = args.out or RESULTS_DIR / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    procs.raise_nofile_limit()
    pinning = procs.Pinning.detect(enabled=not args.no_pin)
    settings = runner.Settings(args.duration, args.warmup, args.connections, args.threads)
    print(f"pinning: {pinning.describe()}")
    print(
        f"load: wrk -t{settings.threads} -c{settings.connections}, {settings.duration:g}s per case "
        f"after {settings.warmup:g}s warm-up; results in {out}"
    )

    with tempfile.TemporaryDirectory(prefix="lb-bench-") as tmp:
        workdir = Path(tmp)
        try:
            origin = backend.start_origin(workdir, out / "logs", pinning, args.origin)
        except procs.StartError as exc:
            print(f"error: the origin did not start: {exc}", file=sys.stderr)
            return 2
        try:
            print(f"origin: {origin.kind} on {origin.url}")
            names = list(args.subjects)
            if args.lb_health:
                _add_after(names, "lb", "lb-health")
            case_names = list(args.cases)
            if args.cache:
                _add_after(names, "lb", "lb-cache", "lb-cache-redis")
                _add_after(names, "nginx", "nginx-cache")
                case_names += [c for c in CACHE_CASES if c not in case_names]
            lb_root, lb_build = REPO_ROOT, "not run"
            if any(name.startswith("lb") for name in names):
                print(f"lb: building ({args.lb_build}) ...", flush=True)
                lb_root, lb_build = build.lb_tree(args.lb_build, workdir, out / "logs")
                print(f"lb: {lb_build}")
            ctx = RunContext(
                workdir=workdir,
                log_dir=out / "logs",
                origin=origin,
                pinning=pinning,
                start_timeout=args.start_timeout,
                lb_root=lb_root,
            )
            subjects = [SUBJECTS[name] for name in names]
            cases = [CASES[name] for name in case_names]
            rounds = []
            for n in range(args.rounds):
                if args.rounds > 1:
                    _log(f"round {n + 1} of {args.rounds}")
                rounds.append(runner.run_all(ctx, subjects, cases, settings, log=_log))
            rows = runner.median_of_rounds(rounds)
        finally:
            origin.stop()

    meta: dict[str, object] = {
        "started": started.isoformat(timespec="seconds"),
        "host": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "pinning": pinning.describe(),
        "origin": origin.kind,
        "lb_build": lb_build,
        "load": (
            f"wrk -t{settings.threads} -c{settings.connections} -d{settings.duration:g}s "
            f"(warm-up {settings.warmup:g}s)"
            + (f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else "")
        ),
        "command": shlex.join(["python", "-m", "benchmarks", *given]),
        "settings": dataclasses.asdict(settings),
    }
    report.write(out, rows, meta, args.baseline)
    print()
    print(report.table(rows, args.baseline))
    scaling = report.scaling_table(rows)
    if scaling:
        print("\n" + scaling)
    errors = report.errors_section(rows)
    if errors:
        print(errors)
    png = report.chart(out, rows)
    if png is None and report.have_matplotlib():
        print("note: no chart: no subject produced results")
    elif png is None:
        print("note: no chart: matplotlib is not installed (pip install 'lb[bench]')")
    print(f"\nwrote {out / 'results.md'}, {out / 'results.json'}" + (f", {png}" if png else ""))
    return 1 if rows and all(m.error is not None for m in rows) else 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return value


def _add_after(names: list[str], after: str, *extra: str) -> None:
    """Put `extra` subjects right after `after` (last when it is not run), so their figures
    sit next to its in the table; names already listed stay where they are."""
    at = names.index(after) + 1 if after in names else len(names)
    for name in extra:
        if name not in names:
            names.insert(at, name)
            at += 1


def _log(line: str) -> None:
    print(line, flush=True)

"""The `lb` command (also `python -m lb`): run, check, demo, bench, worker."""

from __future__ import annotations

import argparse
import sys

DEFAULT_CONFIG = "config/lb.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lb", description="An asyncio L4/L7 load balancer.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve a config")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="YAML file [%(default)s]")
    run.add_argument("--workers", type=_positive, default=None, help="processes [CPU count]")

    check = commands.add_parser("check", help="validate a config and exit")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="YAML file [%(default)s]")
    check.add_argument(
        "--print",
        action="store_true",
        dest="print_config",
        help="print the effective config, every default filled in (secrets hidden)",
    )

    demo = commands.add_parser(
        "demo", help="run the shipped config with two demo backends on :9001 and :9002"
    )
    demo.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="YAML file [%(default)s]")
    demo.add_argument("--workers", type=_positive, default=1, help="processes [%(default)s]")

    worker = commands.add_parser("worker", help="run offload workers for the config's queues")
    worker.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="YAML file [%(default)s]")
    worker.add_argument("--queue", help="consume only this queue [all of them]")
    worker.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve this process's Prometheus metrics (jobs, lag, durations, servers) at "
        "http://HOST:PORT/metrics [off]",
    )
    worker.add_argument(
        "--concurrency", type=_positive, default=None, help="jobs at once per queue [its own]"
    )

    commands.add_parser(
        "bench", help="the load benchmarks (see benchmarks/README.md)", add_help=False
    )

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from benchmarks.cli import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)

    if args.command == "check":
        return _check(args.config, args.print_config)
    if args.command == "run":
        from lb.supervisor import run as run_supervisor

        return run_supervisor(args.config, args.workers)
    if args.command == "demo":
        from lb.demo import run_demo

        return run_demo(args.config, args.workers)
    from lb.offload.command import main as worker_main

    return worker_main(args.config, args.queue, args.concurrency, args.metrics)


def _version() -> str:
    from lb.build import describe

    return describe()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of 1 or more")
    return value


def _check(path: str, print_config: bool = False) -> int:
    from lb.config import ConfigError, load_config, summarize
    from lb.config.effective import effective_yaml

    try:
        config = load_config(path)
    except ConfigError as err:
        print(err.report(path), file=sys.stderr)
        return 1
    if print_config:
        # The YAML on stdout, loadable as it is; the summary goes to stderr.
        print(f"# {path}: {summarize(config)}", file=sys.stderr)
        print(effective_yaml(config), end="")
        return 0
    print(f"{path}: {summarize(config)}")
    return 0

"""Drive one load run with wrk and read its results through a Lua `done()` hook that prints JSON.

The JSON line is more robust to parse than wrk's human summary (units vary: us, ms, s, k, M).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_MARK = "LB_BENCH_JSON "

# %.0f, not %d: latency percentiles are floats, and some Lua builds refuse %d on them.
DONE_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, "connect": %.0f, "read": %.0f, '
    .. '"write": %.0f, "status": %.0f, "timeout": %.0f, "p50_us": %.0f, "p90_us": %.0f, '
    .. '"p99_us": %.0f, "mean_us": %.1f, "max_us": %.0f}\\n',
    "MARK", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
""".replace("MARK", _MARK)


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int  # responses with status >= 400 (wrk's "non-2xx or 3xx")
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.status_errors
            + self.timeouts
        )

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        for line in output.splitlines():
            if line.startswith(_MARK):
                d = json.loads(line[len(_MARK) :])
                return cls(
                    requests=int(d["requests"]),
                    duration_s=d["duration_us"] / 1e6,
                    bytes=int(d["bytes"]),
                    connect_errors=int(d["connect"]),
                    read_errors=int(d["read"]),
                    write_errors=int(d["write"]),
                    status_errors=int(d["status"]),
                    timeouts=int(d["timeout"]),
                    p50_ms=d["p50_us"] / 1e3,
                    p90_ms=d["p90_us"] / 1e3,
                    p99_ms=d["p99_us"] / 1e3,
                    mean_ms=d["mean_us"] / 1e3,
                    max_ms=d["max_us"] / 1e3,
                )
        raise WrkError(f"no result line in wrk output:\n{output[-2000:]}")


def available() -> bool:
    return shutil.which("wrk") is not None


def write_script(path: Path) -> Path:
    path.write_text(DONE_SCRIPT)
    return path


def run(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    script: Path,
    headers: tuple[str, ...] = (),
    prefix: tuple[str, ...] | list[str] = (),
    timeout_s: float = 5.0,
) -> WrkResult:
    """Run wrk once (bounded: killed if it overruns `duration` by 30 s) and return its results."""
    argv = [
        *prefix,
        "wrk",
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(script),
    ]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 30, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration + 30:.0f}s") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout[-500:]}")
    return WrkResult.parse(done.stdout)

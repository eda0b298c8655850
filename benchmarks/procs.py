"""Child processes of a benchmark run: start, pin, wait for, measure and stop.

Invariants: every process is started through `start()` and stopped by its PID (terminate, then kill
after a timeout), together with any descendants it spawned; nothing here signals a process by name.
Every wait is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class StartError(RuntimeError):
    """A process did not come up. `summary`: one line naming the cause; str(): that plus the log."""

    def __init__(self, summary: str, proc: Process | None = None):
        if proc is None:
            self.summary = summary
            super().__init__(summary)
            return
        tail = proc.log_tail()
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "")
        self.summary = summary + (f": {last.strip()}" if last else "") + f" (log {proc.log_path})"
        super().__init__(f"{self.summary}\n{tail}" if tail else self.summary)


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the subject (the proxy under test) and the load (origin, wrk) run on.

    `None` for a CPU means no pinning: on a 1-CPU machine, or with `--no-pin`.
    """

    subject_cpu: int | None
    load_cpu: int | None

    @classmethod
    def detect(cls, enabled: bool = True) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or len(cpus) < 2 or not _have_taskset():
            return cls(None, None)
        return cls(cpus[0], cpus[1])

    def subject_prefix(self) -> list[str]:
        return _taskset(self.subject_cpu)

    def subject_cpus(self, n: int) -> tuple[list[int], bool]:
        """CPUs for a subject that can use `n` (`lb run --workers n`): the subject's own, then
        spare ones (beyond the subject's and the load's), then the load's; and whether that
        last one had to be taken, so the subject shares a CPU with wrk and the origin. ([],
        False) when nothing is pinned."""
        if self.subject_cpu is None or self.load_cpu is None:
            return [], False
        taken = {self.subject_cpu, self.load_cpu}
        spare = [c for c in sorted(os.sched_getaffinity(0)) if c not in taken]
        cpus = [self.subject_cpu, *spare][:n]
        if len(cpus) < n:
            return [*cpus, self.load_cpu], True
        return cpus, False

    def load_prefix(self) -> list[str]:
        return _taskset(self.load_cpu)

    def describe(self) -> str:
        if self.subject_cpu is None:
            return (
                f"no CPU pinning ({os.cpu_count()} CPU(s) or --no-pin): "
                "subject, origin and wrk share the CPUs"
            )
        return (
            f"subject pinned to CPU {self.subject_cpu} (taskset -c {self.subject_cpu}, children "
            f"inherit); origin and wrk pinned to CPU {self.load_cpu} "
            f"(taskset -c {self.load_cpu})"
        )


def _have_taskset() -> bool:
    return any(Path(d, "taskset").exists() for d in os.environ.get("PATH", "").split(os.pathsep))


def _taskset(cpu: int | None) -> list[str]:
    return [] if cpu is None else taskset([cpu])


def taskset(cpus: list[int]) -> list[str]:
    """The argv prefix that runs a program on `cpus` (none: anywhere)."""
    return ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now; the small race with other programs is accepted for a benchmark."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` ports free right now, all different: bound together, so the kernel cannot hand out
    one twice (separate `free_port` calls can, and a listener and the admin API then collide)."""
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)
        ]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


def raise_nofile_limit() -> None:
    """Raise our soft open-files limit to the hard one; children inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def max_proxied_connections(cap: int = 10000) -> int:
    """How many proxied connections fit our open-files limit: two sockets each, some spare."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(256, min(cap, (soft - 100) // 2))


class Process:
    """One started child process, its output going to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            # A new session: a Ctrl-C at the terminal reaches only us, and our finally blocks
            # stop the children in order.
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate, then kill after `timeout`; then the same for descendants left behind."""
        descendants = descendant_pids(self.pid) if self.alive() else []
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout)
        _stop_pids(descendants, timeout)

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"<Process {self.name} pid={self.pid} {state}>"


def start(name: str, argv: list[str], log_dir: Path, cwd: Path | None = None) -> Process:
    return Process(name, argv, log_dir / f"{name}.log", cwd=cwd)


def _stop_pids(pids: list[int], timeout: float) -> None:
    """Stop orphans by PID: they were our descendants when we looked, before their parent died."""
    alive = [pid for pid in pids if _signal(pid, signal.SIGTERM)]
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _exists(pid)]
    for pid in alive:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _exists(pid: int) -> bool:
    # A zombie still "exists" until reaped by its (new) parent; count it as gone.
    stat = _read_stat(pid)
    return stat is not None and stat[0] != "Z"


def wait_for_port(proc: Process, host: str, port: int, timeout: float) -> None:
    """Return once `host:port` accepts connections; StartError if `proc` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(
                f"{proc.name} exited with code {proc.popen.returncode} before listening on "
                f"{host}:{port}",
                proc,
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise StartError(
        f"{proc.name} did not accept connections on {host}:{port} within {timeout:.0f}s", proc
    )


# --- CPU time from /proc -------------------------------------------------------------------------


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the `(comm)` field: [state, ppid, ...]; None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def descendant_pids(root: int) -> list[int]:
    """All live descendants of `root`, found by one scan of /proc (ppid links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_stat(int(entry))
        if stat is not None:
            children.setdefault(int(stat[1]), []).append(int(entry))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cpu_snapshot(roots: list[int]) -> dict[int, tuple[float, float]]:
    """CPU seconds in user mode and in the kernel (utime, stime) of each process in the trees
    under `roots`."""
    snapshot: dict[int, tuple[float, float]] = {}
    for root in roots:
        for pid in [root, *descendant_pids(root)]:
            stat = _read_stat(pid)
            if stat is not None:
                # After comm: index 11 is utime, 12 is stime (fields 14 and 15 of proc(5)).
                snapshot[pid] = (int(stat[11]) / _CLK_TCK, int(stat[12]) / _CLK_TCK)
    return snapshot


def cpu_delta(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]
) -> float:
    """CPU seconds spent between two snapshots by processes alive at the second one."""
    return sum(sum(t) - sum(before.get(pid, (0.0, 0.0))) for pid, t in after.items())


def kernel_delta(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]
) -> float:
    """The part of `cpu_delta` spent in the kernel (system calls, and the network stack's
    work done on the process's behalf)."""
    return sum(t[1] - before.get(pid, (0.0, 0.0))[1] for pid, t in after.items())

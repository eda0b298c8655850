"""Subjects: what wrk is pointed at. `direct` is the origin itself; the others are proxies.

A subject knows how to start itself against an origin and returns a `Running`: the base URL per
scheme it serves, the processes to stop, and the process trees whose CPU time is its cost. To add
one (an L4 `haproxy-tcp`, a TLS listener), subclass `Subject`, list the schemes it serves, and
register it in `SUBJECTS`; cases pick the base URL by their scheme and skip subjects without it.
"""

from __future__ import annotations

import shutil
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from benchmarks import configs, procs, tls
from benchmarks.backend import HOST, REPO_ROOT, Origin


@dataclass(frozen=True)
class RunContext:
    """What every subject needs to start: where to write, the origin, pinning, options."""

    workdir: Path
    log_dir: Path
    origin: Origin
    pinning: procs.Pinning
    start_timeout: float = 10.0


@dataclass
class Running:
    """A started subject. `cpu_roots`: PIDs whose process trees are measured for CPU time."""

    targets: dict[str, str]  # scheme -> base URL, e.g. {"http": "http://127.0.0.1:8080"}
    cpu_roots: list[int]
    processes: list[procs.Process] = field(default_factory=list)
    note: str = ""

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


class Subject(ABC):
    name: ClassVar[str]
    title: ClassVar[str]
    layer: ClassVar[str] = "L7"
    schemes: ClassVar[frozenset[str]] = frozenset({"http"})

    def unavailable(self) -> str | None:
        """Why this subject cannot run here (a program is missing), or None."""
        return None

    @abstractmethod
    def start(self, ctx: RunContext) -> Running: ...

    @staticmethod
    def _serve(
        ctx: RunContext,
        name: str,
        argv: list[str],
        port: int,
        *more_ports: int,
        cpus: list[int] | None = None,
    ) -> procs.Process:
        """Start `argv` pinned to the subject CPU (or to `cpus`) and wait until every port
        accepts connections (a subject may open its listeners one after the other)."""
        prefix = ctx.pinning.subject_prefix() if cpus is None else procs.taskset(cpus)
        process = procs.start(name, prefix + argv, ctx.log_dir, REPO_ROOT)
        try:
            for each in (port, *more_ports):
                procs.wait_for_port(process, HOST, each, ctx.start_timeout)
        except BaseException:
            process.stop()
            raise
        return process


class Direct(Subject):
    name = "direct"
    title = "wrk straight at the origin (the ceiling)"

    def start(self, ctx: RunContext) -> Running:
        # The origin's own CPU time is the "subject" cost here: what serving costs without a proxy.
        return Running({"http": ctx.origin.url}, [ctx.origin.process.pid], note="origin CPU")


class Lb(Subject):
    """lb as shipped: `lb run` with the defaults a user gets (the access log on, in JSON),
    the log written to a file, one worker on the subject's CPU."""

    name = "lb"
    title = "lb run --workers 1, as shipped (access log on, to a file)"
    schemes = frozenset({"http", "https"})
    access_log = True  # the shipped default; off for `lb-nolog`
    health = False  # active + passive health checks on the pool (`lb-health`)
    workers = 1

    def start(self, ctx: RunContext) -> Running:
        port, admin = procs.free_port(), procs.free_port()
        log = ctx.workdir / f"{self.name}-access.log" if self.access_log else None
        conf = ctx.workdir / f"{self.name}.yaml"
        tls_port, files = procs.free_port(), tls.certificate(ctx.workdir)
        conf.write_text(
            configs.lb_http(
                port,
                ctx.origin.port,
                admin,
                log,
                tls=(tls_port, files.cert, files.key),
                health=self.health,
            )
        )
        # The supervisor is started under taskset; its worker children inherit the CPUs.
        argv = [sys.executable, "-m", "lb", "run", "-c", str(conf), "--workers", str(self.workers)]
        cpus, shared = ctx.pinning.subject_cpus(self.workers)
        process = self._serve(ctx, self.name, argv, port, tls_port, cpus=cpus)
        notes = [] if self.access_log else ["access log off"]
        if self.health:
            notes.append("health checks on")
        if self.workers > 1:
            where = f"CPUs {','.join(map(str, cpus))}" if cpus else "unpinned"
            shared_note = ", shared with the load" if shared else ""
            notes.append(f"{self.workers} workers, {where}{shared_note}")
        targets = {"http": f"http://{HOST}:{port}", "https": f"https://{HOST}:{tls_port}"}
        return Running(targets, [process.pid], [process], ", ".join(notes))


class LbNoLog(Lb):
    """lb with `access_log: {enabled: false}`: what the access log costs, against `lb`."""

    name = "lb-nolog"
    title = "lb run --workers 1, access log off"
    access_log = False


class LbWorkers2(Lb):
    """`lb run --workers 2`, as shipped otherwise: how lb scales with worker processes, against
    `lb` (1 worker). It gets a second CPU: a spare one if the machine has one, else the load's
    (the note says so), so on 2 CPUs it competes with wrk and the origin."""

    name = "lb-w2"
    title = "lb run --workers 2, as shipped"
    workers = 2


class LbHealth(Lb):
    """lb as deployed: the pool actively checked (GET /small every 2s) and passively watched,
    to show what health checking costs against plain `lb` in the same run (`--lb-health`)."""

    name = "lb-health"
    title = "lb run --workers 1, active + passive health checks"
    health = True


class Nginx(Subject):
    name = "nginx"
    title = "nginx reverse proxy, 1 worker, upstream keepalive 64"

    def unavailable(self) -> str | None:
        return None if shutil.which("nginx") else "nginx is not installed"

    def start(self, ctx: RunContext) -> Running:
        port = procs.free_port()
        ndir = ctx.workdir / "nginx-proxy"
        ndir.mkdir()
        conf = ndir / "nginx.conf"
        conf.write_text(configs.nginx_proxy(ndir, port, ctx.origin.port))
        argv = ["nginx", "-p", str(ndir), "-e", str(ndir / "error.log"), "-c", str(conf)]
        process = self._serve(ctx, "nginx-proxy", argv, port)
        return Running({"http": f"http://{HOST}:{port}"}, [process.pid], [process])


class Haproxy(Subject):
    name = "haproxy"
    title = "haproxy mode http, nbthread 1, http-reuse always"
    schemes = frozenset({"http", "https"})

    def unavailable(self) -> str | None:
        return None if shutil.which("haproxy") else "haproxy is not installed"

    def start(self, ctx: RunContext) -> Running:
        port = procs.free_port()
        conf = ctx.workdir / "haproxy.cfg"
        maxconn = procs.max_proxied_connections()
        tls_port, files = procs.free_port(), tls.certificate(ctx.workdir)
        conf.write_text(
            configs.haproxy_http(port, ctx.origin.port, maxconn, tls=(tls_port, files.pem))
        )
        # -db: stay in the foreground, so the PID we hold is the one serving.
        process = self._serve(ctx, "haproxy", ["haproxy", "-f", str(conf), "-db"], port)
        targets = {"http": f"http://{HOST}:{port}", "https": f"https://{HOST}:{tls_port}"}
        return Running(targets, [process.pid], [process])


class LbTcp(Subject):
    name = "lb-tcp"
    title = "lb run --workers 1, a mode: tcp listener"
    layer = "L4"

    def start(self, ctx: RunContext) -> Running:
        port, admin = procs.free_port(), procs.free_port()
        conf = ctx.workdir / "lb-tcp.yaml"
        conf.write_text(configs.lb_tcp(port, ctx.origin.port, admin))
        argv = [sys.executable, "-m", "lb", "run", "-c", str(conf), "--workers", "1"]
        process = self._serve(ctx, "lb-tcp", argv, port)
        return Running({"http": f"http://{HOST}:{port}"}, [process.pid], [process])


class HaproxyTcp(Subject):
    name = "haproxy-tcp"
    title = "haproxy mode tcp, nbthread 1"
    layer = "L4"

    def unavailable(self) -> str | None:
        return None if shutil.which("haproxy") else "haproxy is not installed"

    def start(self, ctx: RunContext) -> Running:
        port = procs.free_port()
        conf = ctx.workdir / "haproxy-tcp.cfg"
        conf.write_text(configs.haproxy_tcp(port, ctx.origin.port, procs.max_proxied_connections()))
        process = self._serve(ctx, "haproxy-tcp", ["haproxy", "-f", str(conf), "-db"], port)
        return Running({"http": f"http://{HOST}:{port}"}, [process.pid], [process])


SUBJECTS: dict[str, Subject] = {
    s.name: s
    for s in (
        Direct(),
        Lb(),
        LbNoLog(),
        LbWorkers2(),
        LbHealth(),
        Nginx(),
        Haproxy(),
        LbTcp(),
        HaproxyTcp(),
    )
}

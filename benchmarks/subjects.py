"""Subjects: what wrk is pointed at. `direct` is the origin itself; the others are proxies.

A subject knows how to start itself against an origin and returns a `Running`: the base URL per
scheme it serves, the processes to stop, and the process trees whose CPU time is its cost. To add
one (an L4 `haproxy-tcp`, a TLS listener), subclass `Subject`, list the schemes it serves, and
register it in `SUBJECTS`; cases pick the base URL by their scheme and skip subjects without it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from benchmarks import configs, procs, tls
from benchmarks.backend import HOST, REPO_ROOT, Origin
from benchmarks.cases import Case


@dataclass(frozen=True)
class RunContext:
    """What every subject needs to start: where to write, the origin, pinning, options."""

    workdir: Path
    log_dir: Path
    origin: Origin
    pinning: procs.Pinning
    start_timeout: float = 10.0
    lb_root: Path = REPO_ROOT  # where `python -m lb` runs from (benchmarks.build)


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
    # The case kinds it runs (`Case.kind`): "proxy" (small, 64k, close, TLS, bulk), "cache".
    kinds: ClassVar[frozenset[str]] = frozenset({"proxy"})
    # The response field saying HIT/MISS (a cache subject's), checked against
    # `Case.expect_cache`; None: not a cache, nothing checked.
    cache_status: ClassVar[str | None] = None

    def unavailable(self) -> str | None:
        """Why this subject cannot run here (a program is missing), or None."""
        return None

    def skips(self, case: Case) -> str | None:
        """Why this subject does not run `case`, or None."""
        if case.scheme not in self.schemes:
            return f"it does not serve {case.scheme}"
        if case.kind not in self.kinds:
            return f"it does not run the {case.kind} cases"
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
        process = procs.start(name, prefix + argv, ctx.log_dir, ctx.lb_root)
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
    # Plain lb runs the cache cases too: the same URLs proxied without a cache.
    kinds = frozenset({"proxy", "cache"})
    access_log = True  # the shipped default; off for `lb-nolog`
    health = False  # active + passive health checks on the pool (`lb-health`)
    cache = False  # `cache: {default_ttl: 1h}` on the route (`lb-cache`)
    redis = False  # with `redis:` at a redis-server started for it (`lb-cache-redis`)
    workers = 1

    def unavailable(self) -> str | None:
        if self.redis and shutil.which("redis-server") is None:
            return "redis-server is not installed"
        return None

    def start(self, ctx: RunContext) -> Running:
        redis = _start_redis(ctx, self.name) if self.redis else None
        try:
            try:
                running = self._start_lb(ctx, redis.port if redis else None)
            except procs.StartError as exc:
                # A port free_port() found was taken before lb bound it (another program, or
                # lb's own connection to redis, got it as its ephemeral port): once more, anew.
                if "address already in use" not in exc.summary:
                    raise
                running = self._start_lb(ctx, redis.port if redis else None)
        except BaseException:
            if redis is not None:
                redis.process.stop()
            raise
        if redis is not None:
            # Stopped after lb (Running.stop goes in reverse); its CPU counts as the subject's.
            running.processes.insert(0, redis.process)
            running.cpu_roots.append(redis.process.pid)
        return running

    def _start_lb(self, ctx: RunContext, redis_port: int | None) -> Running:
        port, admin, tls_port = procs.free_ports(3)
        log = ctx.workdir / f"{self.name}-access.log" if self.access_log else None
        conf = ctx.workdir / f"{self.name}.yaml"
        files = tls.certificate(ctx.workdir)
        conf.write_text(
            configs.lb_http(
                port,
                ctx.origin.port,
                admin,
                log,
                tls=(tls_port, files.cert, files.key),
                health=self.health,
                cache=self.cache,
                redis_port=redis_port,
            )
        )
        # The supervisor is started under taskset; its worker children inherit the CPUs.
        argv = [sys.executable, "-m", "lb", "run", "-c", str(conf), "--workers", str(self.workers)]
        cpus, shared = ctx.pinning.subject_cpus(self.workers)
        process = self._serve(ctx, self.name, argv, port, tls_port, cpus=cpus)
        notes = [] if self.access_log else ["access log off"]
        if self.health:
            notes.append("health checks on")
        if redis_port is not None:
            notes.append("CPU includes redis-server's")
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
    kinds = frozenset({"proxy"})


class LbWorkers2(Lb):
    """`lb run --workers 2`, as shipped otherwise: how lb scales with worker processes, against
    `lb` (1 worker). It gets a second CPU: a spare one if the machine has one, else the load's
    (the note says so), so on 2 CPUs it competes with wrk and the origin."""

    name = "lb-w2"
    title = "lb run --workers 2, as shipped"
    workers = 2
    kinds = frozenset({"proxy"})


class LbHealth(Lb):
    """lb as deployed: the pool actively checked (GET /small every 2s) and passively watched,
    to show what health checking costs against plain `lb` in the same run (`--lb-health`)."""

    name = "lb-health"
    title = "lb run --workers 1, active + passive health checks"
    health = True
    kinds = frozenset({"proxy"})


class LbCache(Lb):
    """lb as shipped plus `cache: {default_ttl: 1h}` on its route: the in-process cache (each
    worker its own), run on the cache cases only (`--cache`)."""

    name = "lb-cache"
    title = "lb run --workers 1, as shipped, route cache: {default_ttl: 1h}"
    schemes = frozenset({"http"})
    kinds = frozenset({"cache"})
    cache_status = "X-Cache"
    cache = True


class LbCacheNoLog(LbCache):
    """`lb-cache` with `access_log: {enabled: false}`: like for like with `nginx-cache`, which
    logs nothing either (only when named in `--subjects`)."""

    name = "lb-cache-nolog"
    title = "lb run --workers 1, access log off, route cache: {default_ttl: 1h}"
    access_log = False


class LbCacheRedis(LbCache):
    """`lb-cache` with `redis:` at a redis-server of its own (`--save "" --appendonly no`, on
    the load's CPU): the shared tier, with lb's in-process tier (`local_ttl`, 5s) in front."""

    name = "lb-cache-redis"
    title = "lb-cache with redis: (a private redis-server, the shared tier)"
    redis = True


def fresh_dir(ctx: RunContext, name: str) -> Path:
    """An empty directory of its own for one start of a subject's process: with --rounds a
    subject starts once per round, and must not find the last round's files (a cache)."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=ctx.workdir))


@dataclass
class _Redis:
    port: int
    process: procs.Process


def _start_redis(ctx: RunContext, owner: str) -> _Redis:
    """A private redis-server for one subject, on a free port, nothing persisted, pinned with
    the origin (another machine's work in a deployment); stopped by its PID with the subject."""
    port = procs.free_port()
    rdir = fresh_dir(ctx, f"{owner}-redis")
    argv = [
        *("redis-server", "--port", str(port), "--bind", HOST),
        *("--save", "", "--appendonly", "no", "--dir", str(rdir)),
    ]
    process = procs.start(f"{owner}-redis", ctx.pinning.load_prefix() + argv, ctx.log_dir)
    try:
        procs.wait_for_port(process, HOST, port, ctx.start_timeout)
    except BaseException:
        process.stop()
        raise
    return _Redis(port, process)


class Nginx(Subject):
    name = "nginx"
    title = "nginx reverse proxy, 1 worker, upstream keepalive 64"
    kinds = frozenset({"proxy", "cache"})  # the cache cases: the same URLs, not cached
    cache = False
    process_name = "nginx-proxy"

    def unavailable(self) -> str | None:
        return None if shutil.which("nginx") else "nginx is not installed"

    def start(self, ctx: RunContext) -> Running:
        port = procs.free_port()
        ndir = fresh_dir(ctx, self.process_name)
        conf = ndir / "nginx.conf"
        conf.write_text(configs.nginx_proxy(ndir, port, ctx.origin.port, cache=self.cache))
        argv = ["nginx", "-p", str(ndir), "-e", str(ndir / "error.log"), "-c", str(conf)]
        process = self._serve(ctx, self.process_name, argv, port)
        return Running({"http": f"http://{HOST}:{port}"}, [process.pid], [process])


class NginxCache(Nginx):
    """nginx with `proxy_cache` (a cache dir in the temp dir) and X-Cache-Status."""

    name = "nginx-cache"
    title = "nginx reverse proxy with proxy_cache, 1 worker"
    kinds = frozenset({"cache"})
    cache_status = "X-Cache-Status"
    cache = True
    process_name = "nginx-cache"


class Haproxy(Subject):
    name = "haproxy"
    title = "haproxy mode http, nbthread 1, http-reuse always"
    schemes = frozenset({"http", "https"})

    def unavailable(self) -> str | None:
        return None if shutil.which("haproxy") else "haproxy is not installed"

    def start(self, ctx: RunContext) -> Running:
        port, tls_port = procs.free_ports(2)
        conf = ctx.workdir / "haproxy.cfg"
        maxconn = procs.max_proxied_connections()
        files = tls.certificate(ctx.workdir)
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
        port, admin = procs.free_ports(2)
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
        LbCache(),
        LbCacheNoLog(),
        LbCacheRedis(),
        Nginx(),
        NginxCache(),
        Haproxy(),
        LbTcp(),
        HaproxyTcp(),
    )
}

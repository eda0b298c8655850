"""The configs the load benchmark gives its subjects are ones they accept: lb's passes
`lb check` (TLS files included, and the cache subjects'), haproxy's passes `haproxy -c` and
nginx's (origin, proxy, proxy with proxy_cache) `nginx -t` when those are installed.
A subject that refused its config would show only as `error` in a long run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import configs, procs, tls
from benchmarks.cases import CACHE_CASES, CASES
from benchmarks.cli import _add_after
from benchmarks.subjects import SUBJECTS
from lb.cli import main
from lb.config import load_config
from lb.config.schema import AccessLogConfig


@pytest.mark.parametrize("health", [False, True])
@pytest.mark.parametrize("access_log", [True, False])
def test_lbs_config_passes_lb_check(tmp_path: Path, health: bool, access_log: bool, capsys) -> None:
    files = tls.certificate(tmp_path)
    path = tmp_path / "lb.yaml"
    secure = (18443, files.cert, files.key)
    log = tmp_path / "access.log" if access_log else None
    path.write_text(configs.lb_http(18080, 18081, 18082, log, tls=secure, health=health))
    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr()
    # `lb` runs as shipped: the access log on in its default format, only its file named.
    effective = load_config(path).access_log
    assert effective == AccessLogConfig(enabled=access_log, path=str(log) if log else "-")


def test_a_two_worker_subject_gets_a_spare_cpu_or_shares_the_loads() -> None:
    pinning = procs.Pinning(0, 1)
    cpus, shared = pinning.subject_cpus(2)
    spare = sorted(os.sched_getaffinity(0) - {0, 1})
    assert (cpus, shared) == (([0, spare[0]], False) if spare else ([0, 1], True))
    assert pinning.subject_cpus(1) == ([0], False)
    assert procs.Pinning(None, None).subject_cpus(2) == ([], False)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxys_config_passes_haproxy_check(tmp_path: Path) -> None:
    files = tls.certificate(tmp_path)
    path = tmp_path / "haproxy.cfg"
    path.write_text(configs.haproxy_http(18080, 18081, 1000, tls=(18443, files.pem)))
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("redis", [False, True])
def test_lb_caches_config_passes_lb_check(tmp_path: Path, redis: bool, capsys) -> None:
    files = tls.certificate(tmp_path)
    path = tmp_path / "lb.yaml"
    secure = (18443, files.cert, files.key)
    log = tmp_path / "access.log"
    text = configs.lb_http(
        18080, 18081, 18082, log, tls=secure, cache=True, redis_port=16379 if redis else None
    )
    path.write_text(text)
    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr()
    config = load_config(path)
    (route,) = config.routes
    assert route.cache is not None and route.cache.default_ttl == 3600
    assert (config.redis is not None) == redis
    if redis:
        assert config.redis is not None and config.redis.url == "redis://127.0.0.1:16379/0"


def _nginx_test(conf: Path, prefix: Path) -> None:
    argv = ["nginx", "-t", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
@pytest.mark.parametrize("cache", [False, True])
def test_nginxs_proxy_config_passes_nginx_t(tmp_path: Path, cache: bool) -> None:
    conf = tmp_path / "nginx.conf"
    text = configs.nginx_proxy(tmp_path, 18080, 18081, cache=cache)
    assert ("proxy_cache bench;" in text) == cache
    conf.write_text(text)
    _nginx_test(conf, tmp_path)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginxs_origin_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(configs.nginx_origin(tmp_path, tmp_path, 18081))
    _nginx_test(conf, tmp_path)


def test_cache_cases_run_only_for_cache_subjects_and_their_references() -> None:
    runs = {
        name: {c for c in CASES if subject.skips(CASES[c]) is None}
        for name, subject in SUBJECTS.items()
    }
    for name in ("lb-cache", "lb-cache-nolog", "lb-cache-redis", "nginx-cache"):
        assert runs[name] == set(CACHE_CASES), name
        assert SUBJECTS[name].cache_status is not None
    for name in ("lb", "nginx"):
        assert set(CACHE_CASES) <= runs[name] and "small" in runs[name]
        assert SUBJECTS[name].cache_status is None
    for name in ("direct", "lb-nolog", "lb-w2", "lb-health", "haproxy", "lb-tcp", "haproxy-tcp"):
        assert not set(CACHE_CASES) & runs[name], name
    assert {CASES[c].expect_cache for c in CACHE_CASES} == {"HIT", "MISS"}


def test_cache_flag_puts_the_cache_subjects_next_to_their_plain_ones() -> None:
    names = ["direct", "lb", "lb-nolog", "nginx", "haproxy"]
    _add_after(names, "lb", "lb-cache", "lb-cache-redis")
    _add_after(names, "nginx", "nginx-cache")
    assert names == [
        *("direct", "lb", "lb-cache", "lb-cache-redis", "lb-nolog"),
        *("nginx", "nginx-cache", "haproxy"),
    ]
    named = ["haproxy", "lb-cache"]
    _add_after(named, "lb", "lb-cache", "lb-cache-redis")
    assert named == ["haproxy", "lb-cache", "lb-cache-redis"]


def test_the_python_origin_answers_the_cache_paths_with_their_cache_control() -> None:
    from benchmarks import origin

    for path, value in ((b"/cached", b"max-age=3600"), (b"/nostore", b"no-store")):
        for close in (False, True):
            response = origin._RESPONSES[(path, close)]
            assert b"\r\nCache-Control: " + value + b"\r\n" in response
            assert response.endswith(b"\r\n\r\n" + origin.SMALL_BODY)
    assert b"Cache-Control" not in origin._RESPONSES[(b"/small", False)]


def test_cpu_time_is_user_and_kernel_and_the_kernel_part_is_reported_apart() -> None:
    # pid -> (utime, stime) seconds; pid 2 started between the snapshots, pid 3 exited.
    before = {1: (1.0, 2.0), 3: (5.0, 5.0)}
    after = {1: (1.5, 2.25), 2: (0.125, 0.25)}
    assert procs.cpu_delta(before, after) == 0.5 + 0.25 + 0.125 + 0.25
    assert procs.kernel_delta(before, after) == 0.25 + 0.25

"""Config files for the origin and the subjects, as pure functions of ports and paths.

Each subject is configured the way its own documentation recommends for a keep-alive reverse proxy
(one worker/thread, upstream connection reuse, no logging), so the comparison is like for like.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.tls import CIPHERS


def _nginx_common(workdir: Path) -> str:
    # master_process off: one process serves, so its PID is the one to pin and measure. Temp paths
    # point into the work dir, so nothing under /var is needed (or written).
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 8192; multi_accept on; }}
"""


def _nginx_temp_paths(workdir: Path) -> str:
    return "".join(
        f"    {name}_temp_path {workdir / (name + '_temp')};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def nginx_origin(workdir: Path, docroot: Path, port: int) -> str:
    """nginx serving the files in `docroot` (`small`, `64k`) at `/small` and `/64k`."""
    return (
        _nginx_common(workdir)
        + f"""\
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    open_file_cache max=16 inactive=60s;
{_nginx_temp_paths(workdir)}    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
        # /small from memory (no file open/stat per request); /64k with sendfile.
        location = /small {{ return 200 "hello, world\n"; }}
        # The cache cases: the same body, cacheable for an hour, or never (no-store).
        location = /cached {{
            add_header Cache-Control "max-age=3600";
            return 200 "hello, world\n";
        }}
        location = /nostore {{
            add_header Cache-Control "no-store";
            return 200 "hello, world\n";
        }}
        location / {{ try_files $uri =404; }}
    }}
}}
"""
    )


def nginx_proxy(workdir: Path, port: int, origin_port: int, cache: bool = False) -> str:
    """nginx as a keep-alive reverse proxy to the origin; with `cache`, `proxy_cache` on (a
    cache dir in `workdir`, the response headers deciding what is kept, as lb's cache does)
    and `X-Cache-Status: HIT|MISS|...` on every answer."""
    # proxy_buffers hold a whole 64 KiB body in memory, so nginx never spills it to a temp file.
    cache_path = cache_on = ""
    if cache:
        # No proxy_cache_valid: only responses that say they are cacheable are kept. No
        # proxy_cache_lock (its default): it would queue every request for an uncacheable URL.
        cache_path = (
            f"    proxy_cache_path {workdir / 'cache'} levels=1:2 keys_zone=bench:10m "
            "max_size=256m inactive=1h use_temp_path=off;\n"
        )
        cache_on = (
            "            proxy_cache bench;\n"
            "            add_header X-Cache-Status $upstream_cache_status always;\n"
        )
    return (
        _nginx_common(workdir)
        + f"""\
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
{_nginx_temp_paths(workdir)}{cache_path}    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
{cache_on}        }}
    }}
}}
"""
    )


def haproxy_http(
    port: int, origin_port: int, maxconn: int, tls: tuple[int, Path] | None = None
) -> str:
    """haproxy in mode http: one thread, always reuse server connections, no logging; with
    `tls` (port, PEM of cert and key) also a TLS frontend."""
    # maxconn must fit the open-files limit (two sockets per proxied connection), or haproxy
    # refuses to start.
    return f"""\
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always

frontend web
    bind 127.0.0.1:{port}
    default_backend origin

backend origin
    server s1 127.0.0.1:{origin_port}
{_haproxy_tls(tls)}"""


def _haproxy_tls(tls: tuple[int, Path] | None) -> str:
    """A second frontend terminating TLS: lb's cipher list and minimum version, ALPN http/1.1."""
    if tls is None:
        return ""
    port, pem = tls
    return f"""
frontend websecure
    bind 127.0.0.1:{port} ssl crt {pem} alpn http/1.1 ssl-min-ver TLSv1.2 ciphers {CIPHERS}
    default_backend origin
"""


def haproxy_tcp(port: int, origin_port: int, maxconn: int) -> str:
    """haproxy in mode tcp: one thread, no logging; bytes forwarded as they are."""
    return f"""\
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend l4
    bind 127.0.0.1:{port}
    default_backend origin

backend origin
    server s1 127.0.0.1:{origin_port}
"""


def lb_tcp(port: int, origin_port: int, admin_port: int) -> str:
    """`lb` with one tcp listener forwarding to the origin."""
    return f"""\
version: 1
listeners:
  l4: {{bind: "127.0.0.1:{port}", mode: tcp, pool: origin}}
pools:
  origin:
    servers: [{{address: "127.0.0.1:{origin_port}"}}]
access_log: {{enabled: false}}
admin: {{bind: "127.0.0.1:{admin_port}"}}
"""


def lb_http(
    port: int,
    origin_port: int,
    admin_port: int,
    access_log: Path | None,
    tls: tuple[int, Path, Path] | None = None,
    health: bool = False,
    cache: bool = False,
    redis_port: int | None = None,
) -> str:
    """`lb` with one http listener routing everything to the origin, every other key left to
    its shipped default; the access log written to `access_log`, or off when None; with `tls`
    (port, cert, key) also a listener terminating TLS; with `health`, active health checks (GET
    /small every 2s) and passive ones on the pool, as a production config would have them;
    with `cache`, `cache: {default_ttl: 1h}` on the route (the in-process cache); with
    `redis_port` too, `redis:` at that port on 127.0.0.1 (the shared tier)."""
    websecure = ""
    if tls is not None:
        tls_port, cert, key = tls
        websecure = (
            f'  websecure: {{bind: "127.0.0.1:{tls_port}", mode: http, '
            f'tls: {{certificates: [{{cert: "{cert}", key: "{key}"}}]}}}}\n'
        )
    # As shipped, the access log is on: only its file is named here.
    log = f'{{path: "{access_log}"}}' if access_log is not None else "{enabled: false}"
    checks = (
        "    health_check: {path: /small, interval: 2s}\n    passive: {consecutive_failures: 5}\n"
        if health
        else ""
    )
    route_cache = "    cache: {default_ttl: 1h}\n" if cache else ""
    redis = f'redis: {{url: "redis://127.0.0.1:{redis_port}/0"}}\n' if redis_port else ""
    return f"""\
version: 1
listeners:
  web: {{bind: "127.0.0.1:{port}", mode: http}}
{websecure}routes:
  - name: all
    match: {{}}
    pool: origin
{route_cache}pools:
  origin:
    servers: [{{address: "127.0.0.1:{origin_port}"}}]
{checks}access_log: {log}
admin: {{bind: "127.0.0.1:{admin_port}"}}
{redis}"""

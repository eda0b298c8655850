"""`POST /api/v1/cache/purge` on `lb run`'s admin listener: without redis it reaches every
worker's own cache; with redis it purges the shared store (and every local tier)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RedisServer, wait_for
from tests.integration.helpers import lb_with_origins, request

CACHED = """  - name: catalog
    match: {path_prefix: /products/}
    pool: app
    cache: {default_ttl: 60s}
"""


def x_cache(port: int, path: str) -> str:
    status, fields, _ = request(port, path)
    assert status == 200
    return fields.get("x-cache", "")


def purge(admin_port: int, doc: object) -> tuple[int, dict[str, object]]:
    status, _, body = request(
        admin_port, "/api/v1/cache/purge", method="POST", body=json.dumps(doc).encode()
    )
    return status, json.loads(body)


def all_hits(port: int, path: str, n: int = 12) -> bool:
    """`n` requests on new connections (spread over the workers) all answered from a cache."""
    return all(x_cache(port, path) == "HIT" for _ in range(n))


def test_purge_reaches_every_workers_cache(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path, workers=2, extra_routes=CACHED) as (lb, origins):
        wait_for(lambda: all_hits(lb.port, "/products/1"), what="both workers to hold /products/1")
        x_cache(lb.port, "/products/2")
        status, doc = purge(lb.admin_port, {"path": "/products/1"})
        assert status == 200 and doc["purged"] >= 1 and "workers_not_answering" not in doc
        assert x_cache(lb.port, "/products/1") == "MISS"
        hits_before = sum(o.hits["/products/1"] for o in origins)
        status, doc = purge(lb.admin_port, {"prefix": "/products/"})
        assert status == 200 and doc["purged"] >= 1
        assert x_cache(lb.port, "/products/1") == "MISS"
        assert sum(o.hits["/products/1"] for o in origins) == hits_before + 1
        status, doc = purge(lb.admin_port, {"all": True})
        assert status == 200


def test_purge_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    with lb_with_origins(tmp_path, workers=1, extra_routes=CACHED) as (lb, _):
        for body, why in [
            ({}, "send one of"),
            ({"everything": True}, "unknown purge"),
            ({"prefix": "/products"}, 'ends with "/"'),
            ({"path": "products/1"}, "starts with"),
            ({"all": "yes"}, "must be true"),
        ]:
            status, doc = purge(lb.admin_port, body)
            assert status == 400 and why in str(doc["error"])


def test_purge_with_redis_clears_the_shared_cache(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    extra = f'redis: {{url: "{redis_server.url}", timeout: 200ms}}\n'
    with lb_with_origins(tmp_path, workers=2, extra_routes=CACHED, extra=extra) as (lb, _):
        wait_for(lambda: all_hits(lb.port, "/products/9"), what="the shared cache to hold it")
        status, doc = purge(lb.admin_port, {"path": "/products/9"})
        assert status == 200 and doc["purged"] == 1
        # Every worker's local tier dropped it too (the store's invalidation message).
        wait_for(lambda: x_cache(lb.port, "/products/9") == "MISS", what="a MISS after the purge")
        redis_server.stop()
        status, doc = purge(lb.admin_port, {"all": True})
        assert status == 503 and "redis" in str(doc["error"])

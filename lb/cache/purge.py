"""`POST /api/v1/cache/purge`: what to remove, and how the request reaches every cache.

With `redis:` the supervisor purges the shared store itself; the workers' in-process tiers
follow through the store's invalidation messages. Without it each worker has its own cache:
the supervisor writes the request to a file in its run directory and signals the workers
(SIGUSR2); each purges its cache and answers with a file holding its count, and the counts
are summed. A worker that does not answer within `ANSWER_WITHIN` is named in the reply.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

ANSWER_WITHIN = 2.0  # seconds the supervisor waits for the workers' counts
KINDS = ("path", "prefix", "tag", "all")


class PurgeRequestError(ValueError):
    """A purge body that names nothing, or something lb does not purge by."""


def parse_purge(body: bytes) -> tuple[str, str]:
    """The body `{"path": ...}`, `{"prefix": ...}`, `{"tag": ...}` or `{"all": true}` as
    (kind, value); raises PurgeRequestError naming what is wrong."""
    try:
        doc = json.loads(body or b"null")
    except ValueError as err:
        raise PurgeRequestError(f"the body is not JSON: {err}") from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise PurgeRequestError(
            'send one of {"path": "/p"}, {"prefix": "/dir/"}, {"tag": "t"}, {"all": true}'
        )
    kind, value = next(iter(doc.items()))
    if kind not in KINDS:
        raise PurgeRequestError(f"unknown purge {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "all":
        if value is not True:
            raise PurgeRequestError('"all" must be true')
        return kind, ""
    if not isinstance(value, str) or not value:
        raise PurgeRequestError(f'"{kind}" must be a non-empty string')
    if kind == "path" and not value.startswith("/"):
        raise PurgeRequestError('"path" is a path: it starts with "/"')
    if kind == "prefix" and value.startswith("/") and not value.endswith("/"):
        raise PurgeRequestError(
            'a path "prefix" ends with "/" (a directory); for one path use "path", '
            'or give a URL prefix such as "https://host/dir"'
        )
    return kind, value


# The files of one request, in `<run dir>/purge/`: `<seq>.json` from the supervisor, then one
# `<seq>.<pid>` per worker with its count.


def request_dir(run_dir: str) -> Path:
    path = Path(run_dir) / "purge"
    path.mkdir(exist_ok=True)
    return path


def write_request(run_dir: str, seq: int, kind: str, value: str) -> None:
    path = request_dir(run_dir) / f"{seq}.json"
    tmp = path.with_name(f".{seq}.json.{os.getpid()}")
    tmp.write_text(json.dumps({"kind": kind, "value": value}))
    os.replace(tmp, path)  # a worker reads it whole or not at all


def pending_requests(run_dir: str, after: int) -> list[tuple[int, str, str]]:
    """The requests with a sequence number above `after`, oldest first."""
    found = []
    for entry in request_dir(run_dir).glob("*.json"):
        with contextlib.suppress(ValueError, OSError):
            seq = int(entry.stem)
            if seq > after:
                doc: dict[str, Any] = json.loads(entry.read_text())
                found.append((seq, str(doc["kind"]), str(doc["value"])))
    return sorted(found)


def write_answer(run_dir: str, seq: int, pid: int, count: int) -> None:
    path = request_dir(run_dir) / f"{seq}.{pid}"
    tmp = path.with_name(f".{seq}.{pid}.tmp")  # one per worker: they answer at once
    tmp.write_text(str(count))
    os.replace(tmp, path)


def read_answer(run_dir: str, seq: int, pid: int) -> int | None:
    try:
        return int((request_dir(run_dir) / f"{seq}.{pid}").read_text())
    except (OSError, ValueError):
        return None

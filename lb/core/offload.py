"""Queue offload, the decisions (sans-IO): what a job stores, how long a retry waits, which
failures are retried, and the JSON a client reads about its job.

A job's payload is a *stored request*: everything a worker needs to send it again as lb
would have (method, target, headers after hop-by-hop removal, body, the client's address for
X-Forwarded-For, the scheme, the route whose pool runs it). A finished job's result is a
*stored response* (status, reason, headers, body). Each is a tag line naming its format, the
metadata, then the raw body: no escaping of the body, which is the large part; a worker
refuses a tag it does not know instead of misreading the envelope.
- `lb-job-request/2`: the metadata's length on a line, then its fields joined by NUL bytes:
  route, method, target, client, scheme, request id, created, then each header's name and
  value. Made for every request lb accepts (the parsers refuse a NUL in a head), since it
  costs a fraction of JSON on the path of every 202.
- `lb-job-request/1`, `lb-job-response/1`: one JSON line of the metadata (bytes as latin-1
  text, so any byte survives): a request whose fields hold a NUL anyway, and every response.

Backoff: attempt n (1-based: the run that failed) waits min(max, base * 2**(n-1)), with
jitter (AWS's "Exponential Backoff And Jitter"): `full` uniform in [0, d], `equal` uniform in
[d/2, d], `none` exactly d.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from lb.core.http import HOP_BY_HOP

__all__ = [
    "JOBS_PREFIX",
    "EnvelopeError",
    "StoredRequest",
    "StoredResponse",
    "accepted_body",
    "accepted_document",
    "backoff_delay",
    "fingerprint",
    "job_id_from_path",
    "owner_hash",
    "retry_reason",
    "status_document",
    "wants_async",
]

JOBS_PREFIX = "/_lb/jobs/"
_REQUEST_TAG = b"lb-job-request/1\n"
_REQUEST_FIELDS_TAG = b"lb-job-request/2\n"
_FIXED_FIELDS = 7  # of a request, before its headers: route ... created
_RESPONSE_TAG = b"lb-job-response/1\n"


class EnvelopeError(ValueError):
    """Bytes that are not an envelope this lb can read."""


@dataclass(frozen=True, slots=True)
class StoredRequest:
    route: str
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]  # as the client sent them, hop-by-hop removed
    body: bytes
    client_ip: str
    proto: bytes  # b"http" | b"https"
    request_id: bytes
    created: float  # Unix seconds, when lb accepted it

    def encode(self) -> bytes:
        headers = self.headers
        fields = [
            self.route.encode(),
            self.method.encode(),
            self.target,
            self.client_ip.encode(),
            self.proto,
            self.request_id,
            repr(self.created).encode(),
        ]
        if headers:
            fields.append(b"\0".join(map(b"\0".join, headers)))
        meta = b"\0".join(fields)
        if meta.count(0) == _FIXED_FIELDS - 1 + 2 * len(headers):  # no field holds a NUL
            return b"".join((_REQUEST_FIELDS_TAG, b"%d\n" % len(meta), meta, self.body))
        return self._encode_json()

    def _encode_json(self) -> bytes:
        meta = {
            "route": self.route,
            "method": self.method,
            "target": self.target.decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
            "client": self.client_ip,
            "proto": self.proto.decode("latin-1"),
            "request_id": self.request_id.decode("latin-1"),
            "created": self.created,
        }
        return _REQUEST_TAG + json.dumps(meta, separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> StoredRequest:
        if data.startswith(_REQUEST_FIELDS_TAG):
            return cls._decode_fields(data)
        meta, body = _split(data, _REQUEST_TAG)
        try:
            return cls(
                route=str(meta["route"]),
                method=str(meta["method"]),
                target=meta["target"].encode("latin-1"),
                headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in meta["headers"]],
                body=body,
                client_ip=str(meta["client"]),
                proto=meta["proto"].encode("latin-1"),
                request_id=meta["request_id"].encode("latin-1"),
                created=float(meta["created"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise EnvelopeError(f"stored request: {e!r}") from None

    @classmethod
    def _decode_fields(cls, data: bytes) -> StoredRequest:
        start = len(_REQUEST_FIELDS_TAG)
        end = data.find(b"\n", start)
        length = data[start:end] if end > 0 else b""
        if not length.isdigit() or end + 1 + int(length) > len(data):
            raise EnvelopeError("envelope without its metadata")
        body_at = end + 1 + int(length)
        parts = data[end + 1 : body_at].split(b"\0")
        if len(parts) < _FIXED_FIELDS or (len(parts) - _FIXED_FIELDS) % 2:
            raise EnvelopeError(f"stored request: {len(parts)} metadata fields")
        route, method, target, client, proto, request_id, created = parts[:_FIXED_FIELDS]
        try:
            return cls(
                route=route.decode(),
                method=method.decode(),
                target=target,
                headers=list(
                    zip(parts[_FIXED_FIELDS::2], parts[_FIXED_FIELDS + 1 :: 2], strict=True)
                ),
                body=data[body_at:],
                client_ip=client.decode(),
                proto=proto,
                request_id=request_id,
                created=float(created),
            )
        except ValueError as e:  # (UnicodeDecodeError included)
            raise EnvelopeError(f"stored request: {e!r}") from None


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]  # hop-by-hop removed; lb frames the body itself
    body: bytes

    def encode(self) -> bytes:
        meta = {
            "status": self.status,
            "reason": self.reason.decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
        }
        return _RESPONSE_TAG + json.dumps(meta, separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> StoredResponse:
        meta, body = _split(data, _RESPONSE_TAG)
        try:
            return cls(
                status=int(meta["status"]),
                reason=meta["reason"].encode("latin-1"),
                headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in meta["headers"]],
                body=body,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise EnvelopeError(f"stored response: {e!r}") from None


def _split(data: bytes, tag: bytes) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(tag):
        raise EnvelopeError(f"not a {tag.strip().decode()} envelope")
    end = data.find(b"\n", len(tag))
    if end < 0:
        raise EnvelopeError("envelope without its metadata line")
    try:
        meta = json.loads(data[len(tag) : end])
    except ValueError as e:
        raise EnvelopeError(f"envelope metadata: {e}") from None
    if not isinstance(meta, dict):
        raise EnvelopeError("envelope metadata is not an object")
    return meta, data[end + 1 :]


def end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` without the hop-by-hop ones (RFC 9110 §7.6.1), and without the fields the
    Connection header names."""
    headers = list(headers)
    drop = set(HOP_BY_HOP)
    for name, value in headers:
        if name.lower() == b"connection":
            drop |= {t.strip().lower() for t in value.split(b",")}
    return [(n, v) for n, v in headers if n.lower() not in drop]


# -- accepting: who asked, the same request again ----------------------------------------------


def wants_async(prefer: bytes | None) -> bool:
    """RFC 7240 §4.1: the client prefers a 202 to waiting (`Prefer: respond-async`)."""
    if not prefer:
        return False
    for item in prefer.split(b","):
        token = item.split(b";", 1)[0].split(b"=", 1)[0].strip().lower()
        if token == b"respond-async":
            return True
    return False


def fingerprint(method: str, target: bytes, body: bytes) -> str:
    """What makes two requests under one Idempotency-Key "the same request"."""
    digest = hashlib.sha256()
    digest.update(method.encode() + b" " + target + b"\n")
    digest.update(body)
    return digest.hexdigest()


def owner_hash(queue: str, value: bytes | None) -> str | None:
    """The owner a job is stored with: a hash (the credential itself is never stored)."""
    if value is None:
        return None
    return hashlib.sha256(queue.encode() + b"\0" + value).hexdigest()


def idempotency_scope(route: str, owner: str | None, key: bytes) -> str:
    """Keys are per route and owner: two users' "1" are two jobs."""
    return hashlib.sha256(f"{route}\0{owner or ''}\0".encode() + key).hexdigest()


def job_id_from_path(path: str) -> str | None:
    """'/_lb/jobs/abc' -> 'abc'; None for anything that cannot be a job id."""
    if not path.startswith(JOBS_PREFIX):
        return None
    job_id = path[len(JOBS_PREFIX) :]
    if not job_id or len(job_id) > 64 or not job_id.isalnum():
        return None
    return job_id


# -- running: retries --------------------------------------------------------------------------


def backoff_delay(
    attempt: int,
    base: float,
    most: float,
    jitter: str,
    rand: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds before the run after `attempt` (the 1-based run that just failed)."""
    delay = min(most, base * 2 ** max(0, attempt - 1))
    if jitter == "full":
        return rand(0.0, delay)
    if jitter == "equal":
        return rand(delay / 2, delay)
    return delay


def retry_reason(
    retry_on: Collection[str | int], *, status: int | None = None, failure: str | None = None
) -> str | None:
    """Why a run is to be retried, or None when its outcome is final.

    `status`: the server answered it; `failure`: no answer ("connect_failure": no connection,
    or none usable; "timeout": no complete answer within the job's timeout)."""
    if status is not None:
        return f"server answered {status}" if status in retry_on else None
    if failure is not None and failure in retry_on:
        return failure.replace("_", " ")
    return None


# -- what a client reads -----------------------------------------------------------------------


def accepted_document(job_id: str) -> dict[str, str]:
    """The 202's body."""
    return {"id": job_id, "status": "queued", "location": JOBS_PREFIX + job_id}


def accepted_body(job_id: str) -> bytes:
    """`accepted_document` as the 202 sends it: one line of JSON."""
    if job_id.isascii() and job_id.isalnum():  # (every id lb makes): nothing to escape
        return b'{"id": "%s", "status": "queued", "location": "%s%s"}\n' % (
            job_id.encode(),
            JOBS_PREFIX.encode(),
            job_id.encode(),
        )
    return json.dumps(accepted_document(job_id)).encode() + b"\n"


def status_document(
    job_id: str, status: str, attempt: int, reason: str | None, created: float, updated: float
) -> dict[str, Any]:
    """GET /_lb/jobs/{id} while the job is not done."""
    doc: dict[str, Any] = {
        "id": job_id,
        "status": status,
        "location": JOBS_PREFIX + job_id,
        "attempt": attempt,
        "created": round(created, 3),
        "updated": round(updated, 3),
    }
    if reason is not None and status in ("retrying", "failed"):
        doc["reason"] = reason
    return doc


def retry_after(status: str) -> int:
    """Seconds a client is told to wait before asking again (Retry-After)."""
    return 1 if status in ("queued", "running", "retrying") else 0

"""lb.core.offload: envelopes, backoff, retry decisions, what a client reads. Pure tables."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lb.core.offload import (
    EnvelopeError,
    StoredRequest,
    StoredResponse,
    accepted_body,
    accepted_document,
    backoff_delay,
    end_to_end,
    fingerprint,
    idempotency_scope,
    job_id_from_path,
    owner_hash,
    retry_reason,
    status_document,
    wants_async,
)

REQUEST = StoredRequest(
    route="reports",
    method="POST",
    target=b"/reports/q?x=%C3%A9",
    headers=[(b"Host", b"example.com"), (b"X-Odd", b"\xff\x00bytes")],
    body=b'\n{"binary": \x00\xff}\n',
    client_ip="10.0.0.1",
    proto=b"https",
    request_id=b"abc",
    created=1700000000.25,
)


def fields(*parts: bytes) -> bytes:
    """An `lb-job-request/2` envelope of these metadata fields (and no body)."""
    meta = b"\0".join(parts)
    return b"lb-job-request/2\n%d\n%s" % (len(meta), meta)


PLAIN = dataclasses.replace(REQUEST, headers=[(b"Host", b"example.com"), (b"X-Odd", b"\xff")])


@pytest.mark.parametrize(
    ("request_", "tag"),
    [
        (PLAIN, b"lb-job-request/2\n"),  # every request a parser lets through
        (REQUEST, b"lb-job-request/1\n"),  # a NUL byte in a field: JSON
        (dataclasses.replace(PLAIN, headers=[]), b"lb-job-request/2\n"),
        (dataclasses.replace(PLAIN, route="r\0"), b"lb-job-request/1\n"),
    ],
)
def test_a_stored_request_comes_back_byte_for_byte(request_: StoredRequest, tag: bytes) -> None:
    data = request_.encode()
    assert data.startswith(tag)
    assert StoredRequest.decode(data) == request_


def test_a_stored_response_comes_back_byte_for_byte() -> None:
    response = StoredResponse(201, b"Created", [(b"Set-Cookie", b"a=1"), (b"X", b"\x80")], b"\0")
    assert StoredResponse.decode(response.encode()) == response


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GET / HTTP/1.1\r\n\r\n",
        b"lb-job-request/1\n",  # no metadata line
        b"lb-job-request/1\n[1, 2]\nbody",
        b'lb-job-request/1\n{"route": "r"}\n',
        b"lb-job-request/1\n{not json\n",
        b"lb-job-response/1\n{}\n",  # a response is not a request
        b"lb-job-request/2\n",
        b"lb-job-request/2\nx\n",
        b"lb-job-request/2\n99\nshorter than that",
        b"lb-job-request/2\n3\na\0b",  # fewer fields than a request has
        fields(b"r", b"GET", b"/", b"ip", b"http", b"id", b"x"),  # created is no number
        fields(b"r", b"GET", b"/", b"ip", b"http", b"id", b"1", b"Host"),  # a name, no value
        fields(b"\xff", b"GET", b"/", b"ip", b"http", b"id", b"1"),  # a route name no UTF-8
    ],
)
def test_what_is_not_a_stored_request_is_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        StoredRequest.decode(data)


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        (1, "none", 0.5),
        (2, "none", 1.0),
        (3, "none", 2.0),
        (7, "none", 30.0),  # 32 capped at max
        (50, "none", 30.0),
        (3, "full", (0.0, 2.0)),
        (3, "equal", (1.0, 2.0)),
    ],
)
def test_backoff(attempt: int, jitter: str, expected: float | tuple[float, float]) -> None:
    def bounds(low: float, high: float) -> float:
        got.append((low, high))
        return high

    got: list[tuple[float, float]] = []
    delay = backoff_delay(attempt, 0.5, 30.0, jitter, rand=bounds)
    if isinstance(expected, tuple):
        assert got == [expected] and delay == expected[1]
    else:
        assert got == [] and delay == expected


RETRY_ON = ["connect_failure", "timeout", 502, 503, 504]


@pytest.mark.parametrize(
    ("status", "failure", "expected"),
    [
        (200, None, None),
        (404, None, None),
        (500, None, None),
        (503, None, "server answered 503"),
        (None, "connect_failure", "connect failure"),
        (None, "timeout", "timeout"),
        (None, "broken", None),
    ],
)
def test_retry_reason(status: int | None, failure: str | None, expected: str | None) -> None:
    assert retry_reason(RETRY_ON, status=status, failure=failure) == expected


def test_nothing_is_retried_when_retry_on_is_empty() -> None:
    assert retry_reason([], status=503) is None
    assert retry_reason([], failure="timeout") is None


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        (None, False),
        (b"", False),
        (b"respond-async", True),
        (b"Respond-Async, wait=10", True),
        (b"wait=10; respond-async", False),  # a parameter of `wait`, not a preference
        (b"return=minimal, respond-async; x=1", True),
        (b"respond-asynchronously", False),
    ],
)
def test_wants_async(prefer: bytes | None, expected: bool) -> None:
    assert wants_async(prefer) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/_lb/jobs/0123abcd", "0123abcd"),
        ("/_lb/jobs/", None),
        ("/_lb/jobs/../admin", None),
        ("/_lb/jobs/a/b", None),
        ("/_lb/jobsx", None),
        ("/_lb/jobs/" + "a" * 65, None),
    ],
)
def test_job_id_from_path(path: str, expected: str | None) -> None:
    assert job_id_from_path(path) == expected


def test_fingerprints_and_scopes_tell_requests_and_owners_apart() -> None:
    assert fingerprint("POST", b"/a", b"1") == fingerprint("POST", b"/a", b"1")
    assert fingerprint("POST", b"/a", b"1") != fingerprint("POST", b"/a", b"2")
    assert fingerprint("POST", b"/a", b"1") != fingerprint("PUT", b"/a", b"1")
    assert idempotency_scope("r", None, b"k") != idempotency_scope("r", "alice", b"k")
    assert idempotency_scope("r", "alice", b"k") != idempotency_scope("s", "alice", b"k")
    assert owner_hash("q", None) is None
    secret = owner_hash("q", b"Bearer secret")
    assert secret is not None and "secret" not in secret
    assert secret != owner_hash("q", b"Bearer other")


def test_hop_by_hop_fields_are_not_stored() -> None:
    headers = [
        (b"Host", b"h"),
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"3"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Accept", b"*/*"),
    ]
    assert end_to_end(headers) == [(b"Host", b"h"), (b"Accept", b"*/*")]


@pytest.mark.parametrize("job_id", ["60e6b015bdf4eb231d69e8f1c83fb764", 'odd"id', "\u00e9"])
def test_the_202_body_is_the_accepted_document_as_json(job_id: str) -> None:
    assert accepted_body(job_id) == json.dumps(accepted_document(job_id)).encode() + b"\n"


def test_documents() -> None:
    assert accepted_document("ab") == {"id": "ab", "status": "queued", "location": "/_lb/jobs/ab"}
    running = status_document("ab", "running", 1, "old", 10.0, 11.0)
    assert running["status"] == "running" and "reason" not in running
    retrying = status_document("ab", "retrying", 2, "server answered 503", 10.0, 11.0)
    assert (retrying["attempt"], retrying["reason"]) == (2, "server answered 503")
    failed = status_document("ab", "failed", 5, "timeout", 10.0, 11.0)
    assert failed["reason"] == "timeout" and failed["location"] == "/_lb/jobs/ab"

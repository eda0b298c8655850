"""The access log: one whole line per request in each format, whatever bytes a client sends
(quotes, backslashes, newlines, control and non-UTF-8 bytes in the path, Host, headers), lines
kept in order across a reopening (SIGHUP), and a file that stops taking lines never stalls the
proxy: lines past the bound are dropped and counted."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

import lb.access_log
from lb.access_log import (
    MAX_DEFERRED,
    AccessLog,
    NcsaClock,
    format_record,
    logfmt_quote,
    ncsa_escape,
)
from lb.config import load_config_text
from lb.config.schema import AccessLogConfig
from lb.core.http import RequestHead
from lb.filters.access_log import FIELDS, LogCombined, LogRequests
from lb.proxy.http.session import Session
from lb.proxy.proxy import Proxy
from lb.worker import _reload
from tests.conftest import one_pool, wait_until

# NCSA combined: client, identd, user, [time], "request", status, bytes, "referer", "agent".
COMBINED = re.compile(
    r'(\S+) - - \[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "([^"]*)" (\d{3}) (\d+) '
    r'"([^"]*)" "([^"]*)"'
)
HOSTILE_TARGET = b'/a"b\\c%22%5C%0A%0D%00%ff/\xff\xfe\x7f?q="x"'
HOSTILE_HOST = b'ev"il\\.example\xff:8080'
HOSTILE_AGENT = b'curl "x" \\ \xc3\xa9\x01'
HOSTILE_ID = b'id"\\\x7f'


def session(
    target: bytes = b"/x",
    headers: list[tuple[bytes, bytes]] | None = None,
    request_id: bytes = b"3f2a9c1e-17",
    detail: str = "",
) -> Session:
    head = RequestHead("GET", target, "1.1", headers or [(b"Host", b"example.com")])
    s = Session(head, "10.0.0.1", b"http", "web", request_id)
    s.pool, s.server, s.status, s.bytes_out, s.detail = "app", "10.0.0.2:9001", 200, 13, detail
    return s


def log_to(path: Path, fmt: str = "json") -> tuple[AccessLog, Any]:
    log = AccessLog(AccessLogConfig(path=str(path), format=fmt))  # type: ignore[arg-type]
    return log, SimpleNamespace(access_log=log)


def lines_of(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.isascii() and data.endswith(b"\n"), data
    return data.decode().splitlines()


# Formats, on hostile values ----------------------------------------------------------------


def test_json_line_has_the_fields_in_order_and_the_values_a_client_sent(tmp_path: Path) -> None:
    log, services = log_to(tmp_path / "a.log")
    f = LogRequests(services, 'web"%s', "api\\%d")  # config names are escaped once, % too
    hostile = [(b"Host", HOSTILE_HOST), (b"User-Agent", HOSTILE_AGENT)]
    f.on_log(session(HOSTILE_TARGET, hostile, HOSTILE_ID, detail='bad "x"\n'))
    f.on_log(session())
    log.close(wait=10)
    first, second = (json.loads(line) for line in lines_of(tmp_path / "a.log"))
    assert list(first) == [*FIELDS, "error"]
    assert list(second) == list(FIELDS)
    expected_path = '/a"b\\c"\\\n\r\x00\ufffd/\xff\xfe\x7f'  # as routes match it: decoded
    assert first["path"] == expected_path
    assert first["host"] == 'ev"il\\.example\xff'  # as routes match it: no port
    assert first["request_id"] == 'id"\\\x7f'
    assert first["error"] == 'bad "x"\n'
    assert (first["listener"], first["route"]) == ('web"%s', "api\\%d")
    assert second["path"] == "/x" and second["host"] == "example.com"
    assert second["method"] == "GET" and second["status"] == 200 and second["bytes"] == 13
    assert (second["client"], second["pool"], second["server"]) == (
        "10.0.0.1",
        "app",
        "10.0.0.2:9001",
    )
    assert isinstance(second["time"], float) and second["duration_ms"] >= 0


def test_times_have_three_decimals_from_whole_milliseconds(tmp_path: Path) -> None:
    """Numbers are formatted from integers: a time and a duration always read `N.DDD`."""
    log, services = log_to(tmp_path / "a.log")
    f = LogRequests(services, "web", "api")
    quick, slow = session(), session()
    quick.started = time.perf_counter()
    slow.started = time.perf_counter() - 2.0075
    before = time.time()
    f.on_log(quick)
    f.on_log(slow)
    log.close(wait=10)
    lines = lines_of(tmp_path / "a.log")
    for line in lines:
        assert re.search(r'"time":\d{10}\.\d{3},', line), line
        assert re.search(r'"duration_ms":\d+\.\d{3}}$', line), line
    first, second = (json.loads(line) for line in lines)
    assert before - 0.001 <= first["time"] <= time.time()
    assert 0 <= first["duration_ms"] < 1000
    assert 2007 <= second["duration_ms"] < 3007


def test_a_line_formatted_later_tells_when_its_request_ended(tmp_path: Path) -> None:
    """Lines are formatted in batches of MAX_DEFERRED requests (or at a flush), from what the
    request left: its time and duration are those of its end, not of the formatting; a line
    added meanwhile (a refused connection) comes after the lines of requests ended before."""
    log, services = log_to(tmp_path / "a.log")
    f = LogRequests(services, "web", "api")
    ended = time.time()
    f.on_log(session(request_id=b"first"))
    assert log.deferred and not log.lines  # nothing formatted yet
    time.sleep(0.3)
    log.add("refused")
    for _ in range(MAX_DEFERRED):
        f.on_log(session(request_id=b"later"))
    assert not log.deferred and len(log.lines) == 2 + MAX_DEFERRED  # one batch, formatted
    log.close(wait=10)
    lines = lines_of(tmp_path / "a.log")
    first = json.loads(lines[0])
    assert first["request_id"] == "first"
    assert ended - 0.001 <= first["time"] < ended + 0.2
    assert first["duration_ms"] < 200
    assert lines[1] == "refused"
    assert [json.loads(line)["request_id"] for line in lines[2:]] == ["later"] * MAX_DEFERRED


def test_a_line_that_cannot_be_formatted_is_lost_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One bad request in a deferred batch costs its own line, logged, not the batch's."""
    log, services = log_to(tmp_path / "a.log")
    f = LogRequests(services, "web", "api")
    f.on_log(session(request_id=b"before"))
    # A time that cannot be a line's (int(nan) raises).
    log.deferred.append((f, session(), float("nan")))
    f.on_log(session(request_id=b"after"))
    with caplog.at_level(logging.ERROR):
        log.close(wait=10)
    ids = [json.loads(line)["request_id"] for line in lines_of(tmp_path / "a.log")]
    assert ids == ["before", "after"]
    assert "access log: no line for" in caplog.text


def test_combined_line_escapes_what_a_client_sent_as_hex(tmp_path: Path) -> None:
    log, services = log_to(tmp_path / "a.log", "combined")
    f = LogCombined(services)
    headers = [(b"Host", HOSTILE_HOST), (b"User-Agent", HOSTILE_AGENT), (b"Referer", b'r"\n')]
    f.on_log(session(HOSTILE_TARGET, headers))
    f.on_log(session(b"/x?q=1"))
    log.close(wait=10)
    first, second = lines_of(tmp_path / "a.log")
    m = COMBINED.fullmatch(first)
    assert m is not None, first
    assert m[1] == "10.0.0.1" and m.group(4, 5) == ("200", "13")
    assert m[3] == ("GET /a\\x22b\\x5Cc%22%5C%0A%0D%00%ff/\\xFF\\xFE\\x7F?q=\\x22x\\x22 HTTP/1.1")
    assert m[6] == "r\\x22\\x0A"
    assert m[7] == "curl \\x22x\\x22 \\x5C \\xC3\\xA9\\x01"
    m = COMBINED.fullmatch(second)
    assert m is not None, second
    assert m[3] == "GET /x?q=1 HTTP/1.1" and m.group(6, 7) == ("-", "-")  # the target as received


def test_text_line_quotes_only_values_that_need_it(tmp_path: Path) -> None:
    log, services = log_to(tmp_path / "a.log", "text")
    f = LogRequests(services, "web", "all", "text")
    f.on_log(session(HOSTILE_TARGET, [(b"Host", HOSTILE_HOST)], detail="no route"))
    log.close(wait=10)
    (line,) = lines_of(tmp_path / "a.log")
    assert line.startswith("time=")
    assert " client=10.0.0.1 listener=web request_id=3f2a9c1e-17 method=GET " in line
    assert ' path="/a\\"b\\\\c\\"\\\\\\n\\r\\u0000\\ufffd/\\u00ff\\u00fe\\u007f" ' in line
    assert line.endswith(' error="no route"')


def test_remembered_paths_and_names_are_each_lines_own(tmp_path: Path) -> None:
    """Quoted paths are kept by target, per format, and pool/server fields by pair: a line
    still has its own path, pool, server and status, in its own format's quoting, for targets
    seen before, targets too long to keep, and pairs sharing a pool or a server."""
    json_log, json_services = log_to(tmp_path / "a.log")
    text_log, text_services = log_to(tmp_path / "b.log", "text")
    as_json = LogRequests(json_services, "web", "api")
    as_text = LogRequests(text_services, "web", "api", "text")
    long_target = b"/" + b"a" * 300 + b"%20b"
    cases = [
        (b"/x", "app", "10.0.0.2:9001", 200),
        (b"/x?q=1", "app", "10.0.0.3:9001", 404),  # same path, another target and server
        (b"/a%20b", "other", "10.0.0.2:9001", 0),  # another pool, a server seen in "app"
        (long_target, None, "", 503),  # lb answered: no pool, no server
        (b"/x", "app", "10.0.0.2:9001", 1234),  # a status no table holds
    ]
    for _ in range(2):  # the second time, from what was remembered
        for target, pool, server, status in cases:
            for f in (as_json, as_text):
                s = session(target)
                s.pool, s.server, s.status = pool, server, status
                f.on_log(s)
    json_log.close(wait=10)
    text_log.close(wait=10)
    expected = [
        ("/x", "app", "10.0.0.2:9001", 200),
        ("/x", "app", "10.0.0.3:9001", 404),
        ("/a b", "other", "10.0.0.2:9001", 0),
        ("/" + "a" * 300 + " b", "-", "-", 503),
        ("/x", "app", "10.0.0.2:9001", 1234),
    ] * 2
    got = [json.loads(line) for line in lines_of(tmp_path / "a.log")]
    assert [(g["path"], g["pool"], g["server"], g["status"]) for g in got] == expected
    texts = lines_of(tmp_path / "b.log")
    assert len(texts) == len(expected)
    for line, (path, pool, server, status) in zip(texts, expected, strict=True):
        quoted = logfmt_quote(path)
        assert f" path={quoted} host=example.com route=api pool={pool} server={server} " in line
        assert f" status={status} bytes=13 " in line
    assert texts[0].count(" path=/x ") == 1  # not json's quoted "/x"


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("/x", "/x"),
        ("", '""'),
        ("a b", '"a b"'),
        ("a=b", '"a=b"'),
        ('"', '"\\""'),
        ("é", '"\\u00e9"'),
    ],
)
def test_logfmt_quote(value: str, quoted: str) -> None:
    assert logfmt_quote(value) == quoted


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        (b"/x?a=1", "/x?a=1"),
        (b'"', "\\x22"),
        (b"\\", "\\x5C"),
        (b"\n\x00\x7f\xff", "\\x0A\\x00\\x7F\\xFF"),
    ],
)
def test_ncsa_escape(raw: bytes, escaped: str) -> None:
    assert ncsa_escape(raw) == escaped


def test_records_without_a_request_in_every_format() -> None:
    record = {"time": 1.5, "client": "10.0.0.1", "listener": "web", "status": 408, "error": "a b"}
    assert json.loads(format_record("json", record)) == record
    assert format_record("text", record) == (
        'time=1.5 client=10.0.0.1 listener=web status=408 error="a b"'
    )
    line = format_record("combined", record, NcsaClock())
    m = COMBINED.fullmatch(line)
    assert m is not None and m[3] == "-" and m.group(4, 5) == ("408", "0"), line


# Through lb, both parsers ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "combined", "text"])
async def test_hostile_requests_make_one_whole_line_each(
    fmt, tmp_path, origin, proxy, connect
) -> None:
    o = await origin()
    path = tmp_path / "access.log"
    w = await proxy(one_pool(o, access_log={"path": str(path), "format": fmt}))
    c = await connect(w)
    requests = [
        b"GET /plain HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET /q%22uote%5Cback%0Anew%ff?x=%22 HTTP/1.1\r\nHost: a\r\n\r\n",
        b'GET /raw%ff%fe HTTP/1.1\r\nHost: h\xff"\\:81\r\nUser-Agent: "ua" \\ \xff\r\n'
        b'Referer: x"y\r\nX-Request-ID: rid"\\\r\n\r\n',
    ]
    for raw in requests:
        assert (await c.request(raw)).status == 200
    bad = await connect(w)
    assert (await bad.request(b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Name: 1\r\n\r\n")).status == 400

    def logged() -> bool:
        w.access_log.flush()
        return path.exists() and path.read_bytes().count(b"\n") == len(requests) + 1

    await wait_until(logged)
    lines = lines_of(path)
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        assert [r["status"] for r in records] == [200, 200, 200, 400]
        assert records[1]["path"] == '/q"uote\\back\nnew\ufffd'
        assert records[2]["path"] == "/raw\ufffd\ufffd" and records[2]["host"] == 'h\xff"\\'
        assert records[2]["request_id"] == 'rid"\\'
        assert re.fullmatch(r"[0-9a-f]{8}-\d+", records[0]["request_id"])  # lb's own
        assert records[3]["error"]
    elif fmt == "combined":
        matches = [COMBINED.fullmatch(line) for line in lines]
        assert all(matches), lines
        assert [m[4] for m in matches if m] == ["200", "200", "200", "400"]
        third = matches[2]
        assert third is not None
        assert third[3] == "GET /raw%ff%fe HTTP/1.1"
        assert third.group(6, 7) == ("x\\x22y", "\\x22ua\\x22 \\x5C \\xFF")
    else:
        assert all(line.startswith("time=") for line in lines), lines
        assert 'path="/q\\"uote\\\\back\\nnew\\ufffd"' in lines[1]
        assert re.search(r" request_id=[0-9a-f]{8}-\d+ ", lines[0])  # lb's own, bare
        assert ' request_id="rid\\"\\\\" ' in lines[2]


async def test_a_reload_reopens_the_file_and_keeps_the_order(tmp_path, origin, connect) -> None:
    """logrotate: move the file, then SIGHUP; the old file gets the lines from before."""
    o = await origin()
    path = tmp_path / "access.log"
    conf = tmp_path / "lb.yaml"
    data = one_pool(o, access_log={"path": str(path)})
    data["version"] = 1
    data["listeners"]["web"] = {"bind": "127.0.0.1:0"}
    conf.write_text(yaml.safe_dump(data))
    w = Proxy(load_config_text(conf.read_text()), reuse_port=False)
    await w.start()
    try:
        c = await connect(w)
        for i in range(3):
            assert (await c.request(b"GET /before%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)).status == 200

        def before() -> bool:
            w.access_log.flush()
            return path.exists() and path.read_bytes().count(b"\n") == 3

        await wait_until(before)
        rotated = tmp_path / "access.log.1"
        path.rename(rotated)
        _reload(w, str(conf), str(conf))
        assert (await c.request(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200

        def logged() -> bool:
            w.access_log.flush()
            return path.exists() and path.read_bytes().count(b"\n") == 1

        await wait_until(logged)
        assert [json.loads(line)["path"] for line in lines_of(rotated)] == [
            "/before0",
            "/before1",
            "/before2",
        ]
        assert [json.loads(line)["path"] for line in lines_of(path)] == ["/after"]
    finally:
        await w.shutdown(0.2)


# The writer --------------------------------------------------------------------------------


def test_a_stalled_file_drops_lines_past_the_bound_and_never_blocks(tmp_path, monkeypatch) -> None:
    """A FIFO nobody reads stands for a stalled disk: adding and flushing lines keep returning,
    the lines beyond MAX_PENDING bytes are dropped and counted, and those kept arrive whole."""
    monkeypatch.setattr(lb.access_log, "MAX_PENDING", 1024 * 1024)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so the log's open does not wait
    try:
        log, _ = log_to(fifo)
        line = "x" * 999  # 1000 bytes with its newline; a pipe holds 64 KiB
        total = 8 * lb.access_log.MAX_BUFFERED
        for i in range(total):
            log.add(f"{i:08d}{line[8:]}")
        log.flush()
        assert 0 < log.dropped < total  # 1 MiB waits for the thread, the rest is dropped

        log.close()  # returns at once; the thread closes the FIFO once it wrote: EOF for us
        got = bytearray()
        os.set_blocking(reader, True)
        while chunk := os.read(reader, 1 << 16):
            got += chunk
    finally:
        os.close(reader)
    kept = got.decode().splitlines()
    assert len(kept) == total - log.dropped
    assert all(len(k) == 999 for k in kept)
    numbers = [int(k[:8]) for k in kept]
    assert numbers == sorted(numbers) and numbers[0] == 0

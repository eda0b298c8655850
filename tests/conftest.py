"""Fixtures shared by the whole suite: real origin servers, an in-process lb worker, raw clients.

Everything listens on 127.0.0.1:0 and is torn down by the fixture that made it. Clients are raw
sockets so a test sees the exact bytes lb sends; origins record the exact bytes they receive so
a test can assert that nothing of a refused request reached a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import inspect
import json
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from lb.config import Config, ConfigError, load_config_text
from lb.proxy.proxy import Proxy

# --------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 message reader, shared by origins (requests) and clients (responses).


@dataclass
class Message:
    """A request (method, target) or a response (status, reason), with its raw head bytes."""

    start: list[str]
    headers: list[tuple[str, str]]
    raw_head: bytes
    body: bytes = b""

    @property
    def method(self) -> str:
        return self.start[0]

    @property
    def target(self) -> str:
        return self.start[1]

    @property
    def status(self) -> int:
        return int(self.start[1])

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return ", ".join(values) if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def has(self, name: str) -> bool:
        return bool(self.all(name))


async def read_head(reader: asyncio.StreamReader) -> Message | None:
    """One head, or None at a clean EOF before any byte of it."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = raw[:-4].decode("latin-1").split("\r\n")
    start = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    return Message(start, headers, raw)


async def read_body(
    reader: asyncio.StreamReader, msg: Message, *, until_eof: bool = False
) -> bytes:
    """The body framed by Content-Length or chunked; with until_eof, a close-delimited one."""
    te = (msg.header("transfer-encoding") or "").lower()
    if te == "chunked":
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = msg.header("content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    return await reader.read() if until_eof else b""


# --------------------------------------------------------------------------------------------
# Origins.

Handler = Callable[["Origin", Message, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[Any]]


def response(
    status: int = 200,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    reason: str = "OK",
    length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{n}: {v}" for n, v in headers or []]
    if length:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Origin:
    """A real HTTP server; `handler` answers each request (see the `handlers` below)."""

    handler: Handler
    host: str = "127.0.0.1"
    port: int = 0
    connections: int = 0  # TCP connections accepted
    requests: list[Message] = field(default_factory=list)  # parsed, with bodies read
    received: bytearray = field(default_factory=bytearray)  # every raw byte, all connections
    sent: int = 0  # body bytes written by streaming handlers
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def listen(self, tls: ssl.SSLContext | None = None) -> Origin:
        """Start serving (on `port`; 0: a free one), speaking TLS with `tls`."""
        self.server = await asyncio.start_server(self._serve, self.host, self.port, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        recorder = _RecordingReader(reader, self.received)
        try:
            while True:
                head = await read_head(recorder)  # type: ignore[arg-type]
                if head is None:
                    break
                result = await self.handler(self, head, recorder, writer)  # type: ignore[arg-type]
                await writer.drain()
                if result == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await asyncio.sleep(0)  # one turn of the loop: the aborted connections end


class _RecordingReader:
    """Reads from a StreamReader and keeps a copy of every byte."""

    def __init__(self, reader: asyncio.StreamReader, sink: bytearray) -> None:
        self._reader = reader
        self._sink = sink

    async def readuntil(self, sep: bytes) -> bytes:
        data = await self._reader.readuntil(sep)
        self._sink += data
        return data

    async def readexactly(self, n: int) -> bytes:
        data = await self._reader.readexactly(n)
        self._sink += data
        return data

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        self._sink += data
        return data


async def _record(origin: Origin, head: Message, reader: asyncio.StreamReader) -> None:
    head.body = await read_body(reader, head)
    origin.requests.append(head)


class handlers:
    """Origin behaviours. Each is `async (origin, request, reader, writer) -> "close" | None`."""

    @staticmethod
    def fixed(body: bytes = b"hello", status: int = 200, headers: Any = None) -> Handler:
        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
            await _record(origin, req, reader)
            writer.write(response(status, body, list(headers or [])))

        return handle

    @staticmethod
    def echo() -> Handler:
        """The request head as JSON: {method, target, headers: [[name, value], ...], body_len}."""

        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
            await _record(origin, req, reader)
            doc = {
                "method": req.method,
                "target": req.target,
                "headers": req.headers,
                "body_sha256": hashlib.sha256(req.body).hexdigest(),
                "body_len": len(req.body),
            }
            writer.write(response(200, json.dumps(doc).encode(), [("content-type", "json")]))

        return handle

    @staticmethod
    def chunked(parts: list[bytes]) -> Handler:
        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
            await _record(origin, req, reader)
            writer.write(response(200, headers=[("transfer-encoding", "chunked")], length=False))
            for part in parts:
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")

        return handle

    @staticmethod
    def slow(delay: float, body: bytes = b"slow") -> Handler:
        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
            await _record(origin, req, reader)
            await asyncio.sleep(delay)  # the scenario: a server slow to answer
            writer.write(response(200, body))

        return handle

    @staticmethod
    def never() -> Handler:
        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> str:
            origin.requests.append(req)  # the head only: a body is never read either
            await asyncio.sleep(3600)  # the scenario: a server that never answers
            return "close"

        return handle

    @staticmethod
    def large(size: int, piece: int = 64 * 1024) -> Handler:
        """A body of `size` bytes of a known pattern, written with drain() so `origin.sent`
        shows how far the writes got (a bounded proxy makes them block)."""

        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
            await _record(origin, req, reader)
            writer.write(response(200, headers=[("content-length", str(size))], length=False))
            block = pattern(piece)
            left = size
            while left:
                n = min(piece, left)
                writer.write(block[:n])
                await writer.drain()
                origin.sent += n
                left -= n

        return handle

    @staticmethod
    def sha256() -> Handler:
        """Hashes the request body; answers the digest as the body of a chunked response
        that repeats the request body back (so a test can hash it down too)."""

        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
            await _record(origin, req, reader)
            digest = hashlib.sha256(req.body).hexdigest()
            writer.write(
                response(
                    200,
                    headers=[("transfer-encoding", "chunked"), ("x-sha256", digest)],
                    length=False,
                )
            )
            view = memoryview(req.body)
            for i in range(0, len(view), 100_000):
                part = bytes(view[i : i + 100_000])
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")

        return handle

    @staticmethod
    def upgrade_echo() -> Handler:
        """101 Switching Protocols, then every byte received is sent back upper-cased."""

        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> str:
            origin.requests.append(req)
            writer.write(
                response(
                    101,
                    headers=[("connection", "upgrade"), ("upgrade", req.header("upgrade") or "")],
                    reason="Switching Protocols",
                    length=False,
                )
            )
            writer.write(b"server-first")
            while data := await reader.read(65536):
                writer.write(data.upper())
                await writer.drain()
            return "close"

        return handle

    @staticmethod
    def informational(status: int = 100, headers: Any = None) -> Handler:
        """A 1xx (100 Continue, 103 Early Hints) before reading the body, then 200 with it."""

        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
            head = response(status, headers=list(headers or []), reason="Info", length=False)
            writer.write(head)
            await writer.drain()
            await _record(origin, req, reader)
            writer.write(response(200, b"got:" + req.body))

        return handle

    @staticmethod
    def close_delimited(body: bytes = b"until-close") -> Handler:
        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> str:
            await _record(origin, req, reader)
            writer.write(response(200, body, length=False))
            return "close"

        return handle

    @staticmethod
    def head_aware(body: bytes = b"0123456789") -> Handler:
        """Content-Length of the body for GET and HEAD, the body itself only for GET."""

        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
            await _record(origin, req, reader)
            head = response(200, headers=[("content-length", str(len(body)))], length=False)
            writer.write(head if req.method == "HEAD" else head + body)

        return handle

    @staticmethod
    def truncated(promised: int = 1000, body: bytes = b"partial") -> Handler:
        """Promises `promised` bytes, sends fewer, closes: a server dying mid-response."""

        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> str:
            await _record(origin, req, reader)
            head = response(200, headers=[("content-length", str(promised))], length=False)
            writer.write(head + body)
            return "close"

        return handle

    @staticmethod
    def raw(data: bytes, close: bool = False) -> Handler:
        async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> str | None:
            await _record(origin, req, reader)
            writer.write(data)
            return "close" if close else None

        return handle


@contextlib.contextmanager
def hanging_address(fillers: int = 4) -> Iterator[str]:
    """`host:port` of a listener whose accept queue is full: Linux drops further SYNs, so a
    connect to it hangs until the connector's timeout. Closed on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    filling = []
    try:
        for _ in range(fillers):
            f = socket.socket()
            f.setblocking(False)
            filling.append(f)
            f.connect_ex(sock.getsockname())

        def full() -> bool:
            """The handshakes that fit completed (their sockets are writable); the rest wait
            in SYN_SENT, so the queue is full."""
            _, done, _ = select.select([], filling, [], 0)
            return 0 < len(done) < fillers

        wait_for(full, 5, interval=0.01, what="the accept queue to fill")
        yield "{}:{}".format(*sock.getsockname())
    finally:
        for f in filling:
            f.close()
        sock.close()


def in_flight(worker: Any) -> list[int]:
    """Requests each server of each pool is counted as carrying: all 0 once lb is quiet."""
    return [s.state.in_flight for p in worker.runtime.pools.values() for s in p.servers]


def _describe(predicate: Callable[[], object], what: str | Callable[[], str] | None) -> str:
    """What a wait waited for: `what` (called, when it is a function: a log read at the
    deadline), else the source of `predicate` (a lambda's line)."""
    if what is not None:
        return what() if callable(what) else what
    try:
        return " ".join(inspect.getsource(predicate).split())
    except (OSError, TypeError):
        return repr(predicate)


async def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    what: str | Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` every `interval` seconds until it returns something truthy (or an
    awaitable of it: a coroutine function is awaited), and return that. After `timeout`
    seconds: AssertionError naming `what` (a string, or a function that makes one then, such
    as a log read; default: the predicate's source) and the last value.
    For async tests: the loop runs on meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {_describe(predicate, what)}"
                f" (last: {value!r})"
            )
        await asyncio.sleep(interval)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    what: str | Callable[[], str] | None = None,
) -> Any:
    """`wait_until` for sync tests (real processes, threads): blocks while it polls. An
    exception from `predicate` (a process not listening yet) counts as not yet; the last one
    is in the AssertionError."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = predicate()
        except Exception as err:
            last = err
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {_describe(predicate, what)}"
                f" (last: {last!r})"
            )
        time.sleep(interval)


def pattern(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def beyond_socket_buffers() -> int:
    """More bytes than the sockets from a server through lb to a client can hold between them
    (the send and receive buffer on each hop, as large as this kernel lets them grow), so a
    transfer that finishes while the client reads nothing means lb read on for it."""

    def most(name: str) -> int:
        with open(f"/proc/sys/net/ipv4/{name}") as f:
            return int(f.read().split()[2])

    return 2 * (most("tcp_rmem") + most("tcp_wmem")) + 8 * 1024 * 1024


@pytest.fixture
async def origin() -> AsyncIterator[Callable[..., Awaitable[Origin]]]:
    """`await origin(handlers.echo())` starts a server; all are closed after the test."""
    started: list[Origin] = []

    async def start(handler: Handler | None = None) -> Origin:
        o = await Origin(handler or handlers.fixed()).listen()
        started.append(o)
        return o

    yield start
    for o in started:
        await o.close()


# --------------------------------------------------------------------------------------------
# lb itself.


def config_problems(text: str) -> list[str]:
    """Every problem `lb check` finds in a YAML config (indented text is dedented); fails the
    test when the config loads."""
    try:
        load_config_text(textwrap.dedent(text))
    except ConfigError as e:
        return [str(p) for p in e.problems]
    raise AssertionError("the config loaded")


@pytest.fixture(params=["httptools", "h11"])
def parser_kind(request: pytest.FixtureRequest) -> str:
    """Every test that uses `proxy` runs against both parser adapters."""
    return str(request.param)


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[..., Awaitable[Proxy]]]:
    """`await start_worker(config, **worker_kw)`: a Proxy serving a `Config` in this process
    (no SO_REUSEPORT), probing its own health checks; each is shut down after the test."""
    workers: list[Proxy] = []

    async def start(config: Config, **kw: Any) -> Proxy:
        worker = Proxy(config, reuse_port=False, **kw)
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.shutdown(0.2)


@pytest.fixture
async def proxy(
    parser_kind: str, start_worker: Callable[..., Awaitable[Proxy]]
) -> Callable[..., Awaitable[Proxy]]:
    """`await proxy(yaml_text)` starts a Proxy in-process. The YAML may leave out `version`,
    `access_log` (off by default here) and listener `bind` (127.0.0.1:0); the address of
    listener NAME is `worker.addresses[NAME]`."""

    async def start(text: str | dict[str, Any]) -> Proxy:
        data = yaml.safe_load(text) if isinstance(text, str) else dict(text)
        data.setdefault("version", 1)
        data.setdefault("access_log", {"enabled": False})
        for listener in data.get("listeners", {}).values():
            listener.setdefault("bind", "127.0.0.1:0")
        config = load_config_text(yaml.safe_dump(data, sort_keys=False))
        return await start_worker(config, parser_kind=parser_kind)

    return start


def one_pool(*origins: Origin, **sections: Any) -> dict[str, Any]:
    """A config with listener `web`, a catch-all route to pool `app` of `origins`; keyword
    arguments replace or add top-level sections (`routes=[...]`, `defaults={...}`)."""
    data: dict[str, Any] = {
        "listeners": {"web": {}},
        "routes": [{"name": "default", "match": {}, "pool": "app"}],
        "pools": {"app": {"servers": [{"address": o.address} for o in origins]}},
    }
    data.update(sections)
    return data


class RawClient:
    """A raw TCP client: `send` exact bytes, read exact responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 2.0, *, head_only: bool = False) -> Message:
        """One response; 1xx heads are returned on their own (they have no body)."""
        async with asyncio.timeout(timeout):
            msg = await read_head(self.reader)
            if msg is None:
                raise ConnectionError("connection closed before a response")
            if head_only or msg.status < 200 or msg.status in (204, 304):
                return msg
            close = "close" in (msg.header("connection") or "").lower()
            msg.body = await read_body(self.reader, msg, until_eof=close)
            return msg

    async def request(self, data: bytes, timeout: float = 2.0) -> Message:
        await self.send(data)
        return await self.response(timeout)

    async def closed(self, timeout: float = 2.0) -> bool:
        """True when the server closes (EOF or reset) within `timeout`; extra bytes are
        returned as False."""
        try:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(65536)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return data == b""

    async def read_all(self, timeout: float = 2.0) -> bytes:
        """Everything until the server closes."""
        async with asyncio.timeout(timeout):
            return await self.reader.read(-1)

    def close(self) -> None:
        self.writer.transport.abort()

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0): a client that is gone, not half-closed."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    """`await connect(worker)` (first listener) or `await connect((host, port))`."""
    clients: list[RawClient] = []

    async def open_(target: Proxy | tuple[str, int], listener: str | None = None) -> RawClient:
        if isinstance(target, Proxy):
            addresses = target.addresses
            target = addresses[listener] if listener else next(iter(addresses.values()))
        reader, writer = await asyncio.open_connection(*target, limit=1 << 20)
        client = RawClient(reader, writer)
        clients.append(client)
        return client

    yield open_
    for client in clients:
        client.close()


@contextlib.contextmanager
def lb_garbage() -> Iterator[list[str]]:
    """Collects the type names of lb objects that only the cyclic GC could free, created
    inside the block: a closed connection must be freed at once, by refcounting."""
    found: list[str] = []
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found += sorted(
            {type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("lb.")}
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


# --------------------------------------------------------------------------------------------
# A private redis-server (never the one a developer may run on 6379).


class RedisServer:
    """A `redis-server` of the test session's own, on a free port of 127.0.0.1.

    `stop()` ends it (SIGTERM to its PID, then SIGKILL if needed) and `start()` brings it
    back on the same port, with the same data directory: with `appendonly`, what was written
    before `stop()` is there again. `flushall()` empties it between tests.
    """

    def __init__(self, *, appendonly: bool = False) -> None:
        self.appendonly = appendonly
        self.dir = tempfile.mkdtemp(prefix="lb-redis-")
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--save", "", "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        log = open(os.path.join(self.dir, "redis.log"), "ab")  # noqa: SIM115 (the child's)
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # this PID only; redis-server writes its AOF and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def ping(self) -> bool:
        return self.command("PING") == b"+PONG"

    def flushall(self) -> None:
        if self.command("FLUSHALL") != b"+OK":
            raise RuntimeError("redis-server did not flush")

    def command(self, *words: str) -> bytes | None:
        """One inline command; the first line of the answer, or None when unreachable."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                answer = b""
                while not answer.endswith(b"\r\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                return answer.split(b"\r\n", 1)[0]
        except OSError:
            return None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_session(appendonly: bool) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (./scripts/test installs it)")
    server = RedisServer(appendonly=appendonly)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    yield from _redis_session(appendonly=False)


@pytest.fixture(scope="session")
def redis_server_durable_session() -> Iterator[RedisServer]:
    yield from _redis_session(appendonly=True)


@pytest.fixture
def redis_server(redis_server_session: RedisServer) -> RedisServer:
    """The session's redis-server, running and empty (a test that stopped it is forgiven)."""
    redis_server_session.start()
    redis_server_session.flushall()
    return redis_server_session


@pytest.fixture
def redis_server_durable(redis_server_durable_session: RedisServer) -> RedisServer:
    """Like `redis_server`, with `appendonly yes` (fsync always): for durability tests."""
    redis_server_durable_session.start()
    redis_server_durable_session.flushall()
    return redis_server_durable_session

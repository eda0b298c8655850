"""An origin in its own process, for fault tests that kill it: `python -m
tests.resilience.fault_origin PORT NAME [MODE]`; prints `ready` once listening.

MODE `ok` (default) answers every request `NAME` with 200, keep-alive; `hang` reads requests
and never answers; `status=503` answers every request with that status (body `NAME`)."""

from __future__ import annotations

import asyncio
import sys


async def serve(port: int, name: str, mode: str) -> None:
    status = int(mode.partition("=")[2]) if mode.startswith("status=") else 200
    body = name.encode() + b"\n"
    answer = b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                if mode == "hang":
                    await asyncio.sleep(3600)  # the scenario: a server that never answers
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "ok"))

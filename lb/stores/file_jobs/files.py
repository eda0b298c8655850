"""The file operations the job directory is made of, and the races each one settles.

A file appears whole or not at all: it is written under a temporary name (`.{pid}.{rand}.tmp`,
in the directory it will live in) and then renamed or linked into place. `os.rename` of one
name is won by exactly one process; `os.link` fails if the target exists (O_EXCL for a file
written first); `os.unlink` is won by one. ENOENT from any of them means another process got
there first, never an error. No fsync: the jobs live as long as the `lb run` that owns the
directory. Any other OSError (a full disk, the directory removed) surfaces from the queue's
methods as StoreUnavailable (`unavailable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar

from lb.stores.errors import StoreUnavailable

LARGE = 256 * 1024  # bytes: a payload or result larger than this is copied in a thread
STALE_TMP = 60.0  # seconds: a temporary file left by a process that died is removed by sweep

P = ParamSpec("P")
T = TypeVar("T")


def unavailable(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """An unexpected OSError (disk full, directory removed) as StoreUnavailable."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except OSError as e:
            raise StoreUnavailable(f"job directory: {e}") from e

    return wrapper


def tmp_path(directory: str, pid: int) -> str:
    """A fresh temporary name in `directory` (left out of every listing: it starts with '.')."""
    return os.path.join(directory, f".{pid}.{secrets.token_hex(6)}.tmp")


def write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


async def write_bytes(path: str, data: bytes) -> None:
    """`write_file`, in a thread when `data` is large (a result of many megabytes)."""
    if len(data) > LARGE:
        await asyncio.to_thread(write_file, path, data)
    else:
        write_file(path, data)


async def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > LARGE:
            return await asyncio.to_thread(f.read)
        return f.read()


def create_exclusive(path: str, data: bytes, pid: int) -> bool:
    """Make `path` hold `data` unless it exists: written aside, then linked (link(2), as
    O_EXCL, fails if the name exists; and the file appears whole)."""
    tmp = tmp_path(os.path.dirname(path), pid)
    write_file(tmp, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        remove(tmp)
    return True


def remove(path: str) -> bool:
    """True when this call removed it; False when it was gone already."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def remove_stale_temporaries(directories: Iterable[str], now: float) -> None:
    """Temporary files older than STALE_TMP: left by a process that died while writing."""
    for directory in directories:
        with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        if now - entry.stat().st_mtime > STALE_TMP:
                            remove(entry.path)

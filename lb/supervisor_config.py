"""Reading and checking the config file for `lb run`, at start and on each reload.

Plain functions of the supervisor: the file's text and the config it holds (paths in it taken
relative to the file's directory), what a reload cannot change, and which listeners' addresses
another process holds. They change nothing: the caller decides to refuse, start or reload.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from lb.config import Config, ConfigError, Problem, load_config_text
from lb.config.base import split_address


def read_config(path: str) -> tuple[str, Config]:
    """The text of the config file at `path` and the config it holds, or ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([Problem("", f"cannot read {path}: not UTF-8 ({e.reason})")]) from None
    except OSError as e:
        raise ConfigError([Problem("", f"cannot read {path}: {e.strerror or e}")]) from None
    # Files named in the config (certificates) are relative to the config file's directory.
    return text, load_config_text(text, path, base_dir=os.path.dirname(os.path.abspath(path)))


def fixed_at_start(running: Config, new: Config) -> list[Problem]:
    """What a reload cannot change: admin.bind (the supervisor's own socket); and a listener
    it adds or moves must find its address free (the workers bind it once the reload is
    accepted; their own sockets are not checked, so a listener may change its mode in place)."""
    problems = []
    old_admin = running.admin.bind if running.admin else None
    new_admin = new.admin.bind if new.admin else None
    if old_admin != new_admin:
        restart = "a reload keeps the admin socket opened at start; restart lb to apply this"
        problems.append(Problem("admin.bind", f"admin listener changed: {restart}"))
    ours = {ls.bind for ls in running.listeners.values()}
    for name, listener in new.listeners.items():
        if listener.bind in ours:
            continue
        for message in ports_in_use(new.model_copy(update={"listeners": {name: listener}})):
            problems.append(Problem(f"listeners.{name}", message.split(": ", 1)[1]))
    return problems


def ports_in_use(config: Config) -> list[str]:
    """Listeners whose address another process holds, one message each.

    Workers bind with SO_REUSEPORT, which would quietly share a port with another program
    (or a second lb) that also sets it; binding once without it first makes that an error.
    """
    busy = []
    for name, listener in config.listeners.items():
        host, port = split_address(listener.bind)
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if listener.mode == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as err:
                busy.append(f"listeners.{name}: cannot bind {listener.bind}: {err.strerror}")
    return busy

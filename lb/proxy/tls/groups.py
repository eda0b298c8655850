"""Key-exchange groups offered by lb's server contexts (TLS 1.3 groups and TLS 1.2 ECDHE
curves): Mozilla's "intermediate" profile, X25519, P-256 and P-384, unless `tls.groups` says
otherwise. OpenSSL 3's own default adds X448, P-521 and finite-field groups.

Why ctypes. Python 3.11's `ssl` cannot set a list of groups: `SSLContext.set_groups` arrives
only in Python 3.14, and `set_ecdh_curve` takes a single curve (in OpenSSL 3 it calls
`SSL_CTX_set1_groups` with that one: `set_ecdh_curve("prime256v1")` would drop X25519). An
OpenSSL config file (`OPENSSL_CONF`) would reach every context of the process and, through the
environment, other processes. So on 3.11-3.13 the list is set with OpenSSL's
`SSL_CTX_set1_groups_list` (the `SSL_CTX_ctrl` it is a macro for), through ctypes, on this
context's own `SSL_CTX` only, in the libssl the `_ssl` module is linked against.

The `SSL_CTX *` is read from the `SSLContext` object (CPython's `PySSLContext`: the first field
after the object header) and proven before it is written through: `SSL_CTX_get_options` on it
must give `ctx.options`, before and after one option is flipped. Anything else (another
interpreter, another layout, a libssl without the symbols) leaves the context untouched and
raises `GroupsUnavailable`; `lb check` then refuses an explicit `tls.groups`, and the default
list is skipped with a warning.
"""

from __future__ import annotations

import ctypes
import ssl
from collections.abc import Sequence
from functools import cache

DEFAULT_GROUPS = ("X25519", "P-256", "P-384")

_SSL_CTRL_SET_GROUPS_LIST = 92  # OpenSSL's ssl.h; SSL_CTX_set1_groups_list(ctx, s) is this ctrl
_PROBE_OPTION = ssl.OP_NO_TICKET


class GroupsUnavailable(Exception):
    """This Python and OpenSSL cannot restrict a context's groups (the message says why)."""


class UnknownGroup(ValueError):
    """OpenSSL does not know a group name (or cannot use it)."""


def set_groups(ctx: ssl.SSLContext, groups: Sequence[str]) -> None:
    """Offer exactly `groups` (OpenSSL names: X25519, P-256, P-384, X448, P-521, ...) in
    `ctx`'s handshakes. UnknownGroup for a name OpenSSL refuses; GroupsUnavailable when the
    list cannot be set at all here."""
    text = ":".join(groups)
    if not groups or any(not g or ":" in g or not g.isascii() for g in groups):
        raise UnknownGroup(f"invalid group list {list(groups)!r}")
    native = getattr(ctx, "set_groups", None)  # Python 3.14+
    if native is not None:
        try:
            native(text)
        except ssl.SSLError:
            raise UnknownGroup(f"OpenSSL refuses the groups {text}") from None
        return
    lib = _libssl()
    pointer = _ssl_ctx(ctx, lib)
    buf = ctypes.create_string_buffer(text.encode("ascii"))
    if lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, buf) != 1:
        raise UnknownGroup(f"OpenSSL refuses the groups {text}")


def check_groups(groups: Sequence[str]) -> str | None:
    """Why `groups` cannot be honoured here, or None: for `lb check`, on a scratch context."""
    try:
        set_groups(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), groups)
    except UnknownGroup as e:
        return f"{e}: use OpenSSL group names such as X25519, P-256, P-384, X448, P-521"
    except GroupsUnavailable as e:
        return f"cannot be honoured by this Python and OpenSSL: {e}"
    return None


@cache
def _libssl() -> ctypes.CDLL:
    import _ssl

    try:
        # dlopen of the extension itself: its symbols resolve in the libssl it was linked with
        # (or in itself, when OpenSSL is linked in statically).
        lib = ctypes.CDLL(_ssl.__file__)
        ctrl = lib.SSL_CTX_ctrl
        get_options = lib.SSL_CTX_get_options
    except (OSError, AttributeError) as e:
        raise GroupsUnavailable(f"no SSL_CTX_ctrl in the ssl module's OpenSSL ({e})") from None
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    ctrl.restype = ctypes.c_long
    get_options.argtypes = [ctypes.c_void_p]
    get_options.restype = ctypes.c_uint64
    return lib


def _ssl_ctx(ctx: ssl.SSLContext, lib: ctypes.CDLL) -> int:
    """The context's `SSL_CTX *`, proven to be it (see the module docstring)."""
    import _ssl

    if not isinstance(ctx, _ssl._SSLContext):
        raise GroupsUnavailable("not CPython's SSLContext")
    address = id(ctx) + object.__basicsize__  # PyObject_HEAD, then SSL_CTX *ctx
    pointer = ctypes.c_void_p.from_address(address).value
    if not pointer:
        raise GroupsUnavailable("no SSL_CTX found in the SSLContext")
    before = ctx.options
    try:
        same = lib.SSL_CTX_get_options(pointer) == before
        ctx.options = before ^ _PROBE_OPTION
        same = same and lib.SSL_CTX_get_options(pointer) == ctx.options
    finally:
        ctx.options = before
    if not same:
        raise GroupsUnavailable("the SSLContext's layout is not the one expected")
    return pointer

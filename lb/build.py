"""Which build of lb this is: the request hot path compiled with mypyc, or plain Python.

`pip install .` compiles the modules setup.py lists when a C compiler is there (see setup.py);
an editable install, or one without a compiler, runs them as the Python source. Both behave
the same; the compiled one spends less CPU per request. Shown by `lb --version`, in `lb run`'s
first log line and under `build` in /api/v1/status, so a benchmark or a bug report says which.
"""

from __future__ import annotations

from importlib import metadata

# A module of setup.py's COMPILED list: it is an extension module when the build compiled them.
import lb.proxy.http.exchange as _probe


def compiled() -> bool:
    return not (_probe.__file__ or "").endswith(".py")


def describe() -> str:
    try:
        version = metadata.version("lb")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"lb {version} ({'hot path compiled with mypyc' if compiled() else 'plain Python'})"

"""Which build of lb this is: the request hot path compiled with mypyc, or plain Python.

`pip install .` compiles the modules setup.py lists when a C compiler is there (see setup.py);
an editable install, or one without a compiler, runs them as the Python source. Both behave
the same; the compiled one spends less CPU per request. Shown by `lb --version`, in `lb run`'s
first log line and under `build` in /api/v1/status, so a benchmark or a bug report says which.
"""

from __future__ import annotations

from importlib import metadata
from importlib.util import find_spec

# A module of setup.py's COMPILED list: an extension module when the build compiled them.
_PROBE = "lb.proxy.http.exchange"


def compiled() -> bool:
    # Found, not imported: importing the proxy would create lb.metrics' collectors before the
    # supervisor has set up their multiprocess directory.
    spec = find_spec(_PROBE)
    return spec is not None and not (spec.origin or "").endswith(".py")


def describe() -> str:
    try:
        version = metadata.version("lb")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"lb {version} ({'hot path compiled with mypyc' if compiled() else 'plain Python'})"

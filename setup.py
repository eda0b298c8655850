"""Builds lb's request hot path with mypyc when it can, and installs plain Python otherwise.

`pip install .` compiles the modules in `COMPILED` (the per-request path: parsing, routing, the
exchange, server choice and retries, the upstream call, lb's own answers, the access log's line
and buffer, request counting, a cache hit, whether a miss may be stored) into C extensions when
a C compiler and mypyc are there. A compiled class cannot be patched or subclassed from Python:
tests change behaviour through config, not by replacing methods. Each is still the same module,
so anything else imports it by name. Without a compiler, or with LB_COMPILE=0, or for an
editable install (whose .py files must stay the code that runs), the package is the plain Python
source. `lb --version` says which one is installed.

What makes compiled code fast is types it can see: a field or method of a compiled class is
read directly, where one typed as a Protocol, or on a plain-Python object (a pydantic model,
the Proxy), is looked up by name each time. So the hot path keeps what it reads per request on
compiled objects (a connection's timeouts, a route's as floats), names concrete classes where
there is one (the exchange's `ClientConnection`), makes an interface with several
implementations a mypyc trait (`Sink`), keeps module constants `Final`, and searches text as
`str` (whose find and `in` are direct calls) rather than `bytes`.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

COMPILED = [
    "lb/core/http.py",
    "lb/core/framing.py",
    "lb/core/forwarding.py",
    "lb/protocols/httptools_impl.py",
    "lb/proxy/http/flow.py",
    "lb/proxy/http/session.py",
    "lb/proxy/http/sink.py",
    "lb/proxy/http/collect.py",
    "lb/proxy/http/attempts.py",
    "lb/proxy/http/call.py",
    "lb/proxy/http/connection.py",
    "lb/proxy/http/request_body.py",
    "lb/proxy/http/answer.py",
    "lb/proxy/http/exchange.py",
    "lb/proxy/http/chain.py",
    "lb/proxy/http/client.py",
    "lb/filters/access_log.py",
    "lb/access_log.py",
    "lb/filters/metrics.py",
    "lb/filters/cache.py",
    "lb/filters/cache_state.py",
    "lb/filters/cache_answers.py",
    "lb/core/cache_policy.py",
    "lb/core/cache_storing.py",
    "lb/core/cache_fields.py",
    "lb/core/cache_freshness.py",
    "lb/core/cache_request.py",
    "lb/core/cache_keys.py",
    "lb/core/cache_entry.py",
    "lb/cache/local.py",
    "lb/cache/cache.py",
    "lb/proxy/pool/pool.py",
    "lb/core/router.py",
    "lb/proxy/runtime.py",
    "lb/core/balancer.py",
    "lb/core/retry.py",
    "lb/request_metrics.py",
    "lb/proxy/timers.py",
    "lb/proxy/listeners.py",
]


def _ext_modules() -> list:
    if os.environ.get("LB_COMPILE", "1") == "0" or "editable_wheel" in sys.argv:
        return []
    try:
        from mypyc.build import mypycify

        # Imported modules are read for their types but not reported on: the build env has
        # mypy, not lb's dependencies, so some of their types are unknown there (`mypy lb`
        # in the test script is the type check).
        return mypycify(["--follow-imports=silent", *COMPILED], opt_level="3")
    except (Exception, SystemExit) as err:  # no mypyc, no compiler, or a module it refused
        print(f"lb: building plain Python, not compiling the hot path ({err})", file=sys.stderr)
        return []


setup(ext_modules=_ext_modules())

"""Parser adapters: httptools (llhttp) when installed, h11 otherwise.

`LB_PARSER=h11` forces the fallback, which the test suite uses to run every protocol test
against both.
"""

from __future__ import annotations

import os

from lb.protocols.base import RequestDelegate, RequestParser, ResponseDelegate, ResponseParser

try:
    from lb.protocols.httptools_impl import HttptoolsRequestParser, HttptoolsResponseParser
except ImportError:  # pragma: no cover - depends on the machine
    HttptoolsRequestParser = None  # type: ignore[assignment,misc]
    HttptoolsResponseParser = None  # type: ignore[assignment,misc]
from lb.protocols.h11_impl import H11RequestParser, H11ResponseParser


def parser_kind() -> str:
    wanted = os.environ.get("LB_PARSER", "auto")
    if wanted == "h11" or HttptoolsRequestParser is None:
        return "h11"
    return "httptools"


def request_parser(delegate: RequestDelegate, max_header_size: int, kind: str) -> RequestParser:
    if kind == "httptools":
        return HttptoolsRequestParser(delegate, max_header_size)
    return H11RequestParser(delegate, max_header_size)


def response_parser(delegate: ResponseDelegate, max_header_size: int, kind: str) -> ResponseParser:
    if kind == "httptools":
        return HttptoolsResponseParser(delegate, max_header_size)
    return H11ResponseParser(delegate, max_header_size)


__all__ = [
    "RequestDelegate",
    "RequestParser",
    "ResponseDelegate",
    "ResponseParser",
    "parser_kind",
    "request_parser",
    "response_parser",
]

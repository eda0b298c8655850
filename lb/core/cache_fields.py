"""Parsers for the header fields HTTP caching reads (sans-IO): Cache-Control, targeted
cache-control fields, HTTP-dates, delta-seconds, entity-tags.

Every parser here is tolerant: a malformed value never raises, it comes back as "invalid"
(None, or an empty directive value) and the policy (lb.core.cache_policy and its rule modules)
decides what invalid means, which for freshness is always the conservative reading (RFC 9111
§4.2.1: "caches are encouraged to consider responses that have invalid freshness information
... to be stale"). It also reads a head's fields by name, for the rule modules.
"""

from __future__ import annotations

import calendar
import re
import time
from email.utils import formatdate
from typing import Any

from lb.core.http import FieldsByName, fields_by_name

__all__ = [
    "DELTA_MAX",
    "Directives",
    "date_value",
    "delta_seconds",
    "fields_by_name",
    "first_value",
    "format_http_date",
    "normal_authority",
    "normalize_field_value",
    "opaque_tag",
    "parse_cache_control",
    "parse_entity_tags",
    "parse_http_date",
    "parse_targeted_field",
]

# Directive name -> argument (unquoted), None when the directive has no argument. An argument
# of "" means "present but unusable" (e.g. conflicting duplicates): never a valid number.
Directives = dict[str, str | None]

# RFC 9111 §1.2.2: a delta-seconds too large to represent, or an overflowing calculation,
# "MUST consider the value to be 2147483648 (2^31)".
DELTA_MAX = 2147483648

# Directives whose argument lists field names: duplicates are merged, not conflicting.
_FIELD_LIST_DIRECTIVES = frozenset({"private", "no-cache"})


def parse_cache_control(value: bytes) -> Directives:
    """Cache-Control (RFC 9111 §5.2), tolerant: names are case-insensitive, arguments may be
    a token or a quoted-string ("Recipients SHOULD accept both forms"), empty list members are
    skipped (RFC 9110 §5.6.1). Duplicates (§4.2.1: "either the first occurrence should be
    used or the response should be considered stale"): the same value twice is kept; differing
    values make the argument "" (invalid, so a max-age reads as stale); for the field-name
    forms of private/no-cache the unqualified form wins (the most restrictive) and lists
    are merged."""
    out: Directives = {}
    text = value.decode("latin-1")
    for name, arg in _split_directives(text):
        if name not in out:
            out[name] = arg
            continue
        prev = out[name]
        if prev == arg:
            continue
        if name in _FIELD_LIST_DIRECTIVES:
            out[name] = None if prev is None or arg is None else f"{prev}, {arg}"
        else:
            out[name] = ""
    return out


_DIRECTIVE = re.compile(r'\s*([^\s=,"]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"?|[^,\s]*))?\s*(?:,|$)')
_UNESCAPE = re.compile(r"\\(.)")


def _split_directives(text: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _DIRECTIVE.match(text, pos)
        if m is None or m.end() == pos:
            # Garbage up to the next comma: skip that member, keep reading the rest.
            comma = text.find(",", pos)
            if comma == -1:
                break
            pos = comma + 1
            continue
        pos = m.end()
        name, arg = m.group(1).lower(), m.group(2)
        if arg is not None and arg.startswith('"'):
            # An unterminated quoted-string is invalid: "" never parses as a number.
            arg = _UNESCAPE.sub(r"\1", arg[1:-1]) if len(arg) > 1 and arg.endswith('"') else ""
        found.append((name, arg))
    return found


# RFC 8941 §3.1.2 key, §3.3.4 token, §3.3.1/§3.3.2 numbers, §3.3.3 string.
_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_SF_INTEGER = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,3})?")
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')


def parse_targeted_field(value: bytes) -> Directives | None:
    """A targeted cache-control field such as CDN-Cache-Control (RFC 9213 §2.1: a Structured
    Field Dictionary, RFC 8941 §4.2.2). None when it does not parse or is empty: RFC 9213
    §2.2 then has the cache fall back to the next field ("the first ... with a valid,
    non-empty value"). Members: true -> None (no argument), false (?0) -> absent, integer and
    token -> their text, string -> its content; a decimal is kept as text, which is no valid
    delta-seconds (§2.1: "Implementations SHOULD NOT consume values that violate these
    inferred constraints"). Parameters are ignored; a duplicate key: the last wins (RFC
    8941 §3.2)."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    out: Directives = {}
    i, n = 0, len(text)
    i = _skip(text, i, " ")
    if i == n:
        return None
    while True:
        m = _SF_KEY.match(text, i)
        if m is None:
            return None
        key, i = m.group(), m.end()
        arg: str | bool | None = None
        if i < n and text[i] == "=":
            item = _sf_bare_item(text, i + 1)
            if item is None:
                return None
            arg, i = item
        i = _sf_parameters(text, i)
        if i < 0:
            return None
        if arg is False:
            out.pop(key, None)
        else:
            out[key] = None if arg is True else arg
        i = _skip(text, i, " \t")
        if i == n:
            return out
        if text[i] != ",":
            return None
        i = _skip(text, i + 1, " \t")
        if i == n:
            return None  # trailing comma


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _sf_bare_item(text: str, i: int) -> tuple[str | bool | None, int] | None:
    """(value, next index): value is the text of a number/token/string, True/False for a
    boolean, None (no argument) never; "" for a byte sequence (no cache directive takes one)."""
    if i >= len(text):
        return None
    c = text[i]
    if c == "?":
        if text[i + 1 : i + 2] in ("0", "1"):
            return text[i + 1] == "1", i + 2
        return None
    if c == '"':
        m = _SF_STRING.match(text, i)
        return (_UNESCAPE.sub(r"\1", m.group(1)), m.end()) if m else None
    if c == ":":
        end = text.find(":", i + 1)
        return ("", end + 1) if end != -1 else None
    m = _SF_INTEGER.match(text, i) if (c == "-" or c.isdigit()) else _SF_TOKEN.match(text, i)
    return (m.group(), m.end()) if m else None


def _sf_parameters(text: str, i: int) -> int:
    """Skips ;key[=item] parameters; -1 when malformed."""
    while i < len(text) and text[i] == ";":
        i = _skip(text, i + 1, " ")
        m = _SF_KEY.match(text, i)
        if m is None:
            return -1
        i = m.end()
        if i < len(text) and text[i] == "=":
            item = _sf_bare_item(text, i + 1)
            if item is None:
                return -1
            i = item[1]
    return i


def delta_seconds(arg: str | None) -> int | None:
    """RFC 9111 §1.2.2 delta-seconds = 1*DIGIT, capped at 2^31; None when invalid (absent
    argument, sign, fraction, letters)."""
    if not arg or not arg.isascii() or not arg.isdigit():
        return None
    digits = arg.lstrip("0") or "0"
    # Compared by length first: int() of a huge digit string is slow, or refused (3.11+).
    return DELTA_MAX if len(digits) > 10 else min(int(digits), DELTA_MAX)


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
# RFC 9110 §5.6.7: a recipient MUST accept IMF-fixdate, rfc850-date and asctime-date.
_IMF_FIXDATE = re.compile(
    _DAY + r", (\d\d) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT", re.ASCII | re.I
)
_RFC850 = re.compile(
    r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    r"(\d\d)-([A-Za-z]{3})-(\d\d) (\d\d):(\d\d):(\d\d) GMT",
    re.ASCII | re.I,
)
_ASCTIME = re.compile(
    _DAY + r" ([A-Za-z]{3}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})", re.ASCII | re.I
)


def parse_http_date(value: bytes | None, now: float | None = None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7) as a Unix time; None when absent or invalid (e.g.
    Expires: 0). `now` resolves rfc850's two-digit year: "a timestamp that appears to be more
    than 50 years in the future" is the most recent past year with those digits."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    m = _IMF_FIXDATE.fullmatch(text)
    if m:
        day, mon, year, hh, mm, ss = m.groups()
    elif m := _ASCTIME.fullmatch(text):
        mon, day, hh, mm, ss, year = m.groups()
    elif m := _RFC850.fullmatch(text):
        day, mon, yy, hh, mm, ss = m.groups()
        this_year = time.gmtime(now).tm_year
        year_i = this_year - this_year % 100 + int(yy)
        if year_i > this_year + 50:
            year_i -= 100
        year = str(year_i)
    else:
        return None
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    try:
        fields = (int(year), month, int(day), int(hh), int(mm), int(ss))
        if not (1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60 and fields[5] < 61):
            return None
        return float(calendar.timegm((*fields, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def format_http_date(ts: float) -> bytes:
    """An IMF-fixdate (RFC 9110 §5.6.7), as Date and Last-Modified are sent."""
    return formatdate(ts, usegmt=True).encode("ascii")


_ENTITY_TAG = re.compile(rb'(?:W/)?"[^"]*"')


def parse_entity_tags(value: bytes) -> list[bytes]:
    """The entity-tags of an ETag or If-None-Match value (RFC 9110 §8.8.3); a comma may sit
    inside an opaque-tag, so the list is scanned by tag, not split on commas."""
    return _ENTITY_TAG.findall(value)


def opaque_tag(etag: bytes) -> bytes:
    """The opaque-tag of an entity-tag: weak comparison (RFC 9110 §8.8.3.2) compares these."""
    return etag[2:] if etag[:2] == b"W/" else etag


_SEPARATED = re.compile(rb'"(?:[^"\\]|\\.)*"|[^",;]+|[,;]')


def normalize_field_value(value: bytes) -> bytes:
    """A field value with the whitespace RFC 9111 §4.1 lets two requests differ by removed:
    around list commas and parameter semicolons, and at both ends (never inside a
    quoted-string). "gzip,br" and "gzip ,  br" normalize alike."""
    parts = _SEPARATED.findall(value)
    return b"".join(p if p[:1] == b'"' else p.strip(b" \t") for p in parts)


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def normal_authority(scheme: str, authority: str) -> str:
    """A URI authority as caches compare it: lower case, without the scheme's default port
    (RFC 9110 §4.2.3: "example.com:80" and "EXAMPLE.com" are the same http origin)."""
    authority = authority.strip().lower()
    host, sep, port = authority.rpartition(":")
    if sep and port == _DEFAULT_PORTS.get(scheme):
        return host
    return authority


# --- reading a head's fields ------------------------------------------------------------


def first_value(fields: FieldsByName, name: bytes, default: Any = None) -> Any:
    values = fields.get(name)
    return values[0] if values else default


def date_value(fields: FieldsByName, received: float) -> float:
    """A response's Date, or the time it was received when Date is absent, repeated with
    different values, or invalid (RFC 9110 §6.6.1: a recipient with a clock adds one)."""
    values = fields.get(b"date")
    date = parse_http_date(values[0], received) if values and len(set(values)) == 1 else None
    return received if date is None else date

"""A stored response's bytes (lb.core.cache_entry): what decodes, and what must never be
served because it is not the whole entry that was written."""

from __future__ import annotations

import pytest

from lb.core.cache_entry import (
    Entry,
    decode_entry,
    decode_variants,
    encode_entry,
    encode_variants,
    variant_store_key,
)
from lb.core.cache_policy import StoredMeta
from lb.core.forwarding import response_to_client
from lb.filters.cache_answers import hit

META = StoredMeta(
    request_time=100.0,
    response_time=100.5,
    date_value=100.0,
    age_value=0.0,
    freshness_lifetime=60.0,
    etag=b'"v1"',
    vary=(b"accept-encoding",),
    tags=("t1", "path:/p"),
)
ENTRY = Entry(
    META,
    200,
    b"OK",
    ((b"Content-Type", b"text/plain"), (b"ETag", b'"v1"'), (b"X-Odd", b"\xe9t\xe9")),
    b"hello " * 200,
)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zlib"])
def test_an_entry_comes_back_as_it_was_stored(compress: bool) -> None:
    data = encode_entry(ENTRY, compress)
    assert decode_entry(data) == ENTRY
    if compress:
        assert len(data) < len(encode_entry(ENTRY, False))  # the body was compressed


WHOLE = encode_entry(ENTRY, compress=True)


@pytest.mark.parametrize(
    "damaged",
    [
        pytest.param(WHOLE[: len(WHOLE) // 2], id="truncated"),
        pytest.param(WHOLE[:-1], id="last-byte-missing"),
        pytest.param(WHOLE[:40] + bytes([WHOLE[40] ^ 1]) + WHOLE[41:], id="bit-flipped"),
        pytest.param(b"LBC2" + WHOLE[4:], id="other-format"),
        pytest.param(b"", id="empty"),
        pytest.param(b"LBC1\x00\x00", id="header-only"),
        pytest.param(encode_variants((b"vary",)), id="a-variants-record"),
    ],
)
def test_a_damaged_entry_is_refused(damaged: bytes) -> None:
    assert decode_entry(damaged) is None


def test_variants_records() -> None:
    vary = (b"accept-encoding", b"accept-language")
    assert decode_variants(encode_variants(vary)) == vary
    assert decode_variants(WHOLE) is None
    assert decode_variants(b"LBV1{not json") is None
    assert variant_store_key("GET http://h/p", "abc") == "GET http://h/p\x00abc"


@pytest.mark.parametrize("name", [None, b"Date", b"date"])
def test_a_hit_goes_on_with_exactly_one_date(name: bytes | None) -> None:
    """RFC 9110 §6.6.1: a hit of an entry stored with a Date sends that one, hit after hit;
    of an entry stored without, lb's own (its fields are rendered once, on the first hit)."""
    stored = b"Thu, 26 Nov 2026 15:00:00 GMT"
    fields = ENTRY.headers + (((name, stored),) if name else ())
    entry = Entry(META, 200, b"OK", fields, b"hello")
    for _ in range(2):
        answer = hit(entry, 3.0, frozenset({b"age"}))
        sent = response_to_client(answer.head(), b"r", chunked=False, close=False).lower()
        dates = [line for line in sent.split(b"\r\n") if line.startswith(b"date:")]
        if name is None:
            assert len(dates) == 1 and stored.lower() not in dates[0]
        else:
            assert dates == [b"date: " + stored.lower()]


def test_a_hits_age_follows_the_clock_second_by_second() -> None:
    """A hit's fields are formatted once per whole second of age (Entry.hit_fields), and
    the same bytes answer every hit within it."""
    entry = Entry(META, 200, b"OK", ENTRY.headers, b"hello")

    def age_of(seconds: float) -> bytes:
        sent = response_to_client(
            hit(entry, seconds, frozenset({b"age"})).head(), b"r", chunked=False, close=False
        )
        (age,) = [line for line in sent.split(b"\r\n") if line.startswith(b"age:")]
        return age

    assert age_of(3.0) == age_of(3.9) == b"age: 3"
    strip = frozenset({b"age"})
    assert hit(entry, 3.1, strip).raw is hit(entry, 3.7, strip).raw
    assert age_of(4.0) == b"age: 4"
    assert age_of(3.2) == b"age: 3"  # (an older answer again: a clock stepped back)

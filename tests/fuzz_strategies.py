"""Hypothesis strategies for hostile protocol requests, derived from the protocol itself.

Every request Struct in the `Request` union is walked with msgspec.inspect, so a
request type added later is fuzzed without touching this file. Each field gets
either a plausible value (one that satisfies its declared constraints, so that
requests reach dispatch and the store) or a hostile one: NUL bytes, lone
surrogates and invalid UTF-8 (sent as raw msgpack, since Python cannot encode
them), integers past int64, NaN and infinities, negative limits, empty and huge
lists, giant strings, 10,000-deep nesting, or a value of the wrong type.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import msgspec
from hypothesis import strategies as st
from msgspec import inspect as mi
from reverie.rpc.protocol import Request

# Bytes that no Python str can carry: msgspec.Raw puts them on the wire as-is.
_BAD_STR_BODIES = [
    b"\xed\xa0\x80",  # a lone high surrogate, UTF-8 encoded
    b"a\xed\xbf\xbfb",  # a lone low surrogate
    b"\xff\xfe",
    b"\xc0\xaf",  # overlong "/"
    b"\xe2\x82",  # truncated sequence
    b"ok\x80",
]


def _raw_str(body: bytes) -> msgspec.Raw:
    assert len(body) < 32
    return msgspec.Raw(bytes([0xA0 | len(body)]) + body)


DEEP_LIST = msgspec.Raw(b"\x91" * 10_000 + b"\x01")
DEEP_MAP = msgspec.Raw(b"\x81\xa1k" * 10_000 + b"\xc0")
# 2 MiB: over every string field's cap, under the frame cap. Built lazily so
# that a failing example's repr stays short.
giant_text = st.builds(lambda: "g" * (2 << 20))

invalid_utf8 = st.sampled_from([_raw_str(b) for b in _BAD_STR_BODIES])
hostile_text = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40).map(lambda s: s + "\x00"),
    st.just(""),
    giant_text,
    st.sampled_from(["\x00", "\u202e", "\ufeff", "a\nb", " ", "../../etc/passwd", "%s%n"]),
    invalid_utf8,
)
hostile_int = st.one_of(
    st.sampled_from([0, -1, -(2**63), 2**63 - 1, 2**63, 2**64 - 1, 2**31, -(2**31) - 1]),
    st.integers(-(2**63), 2**64 - 1),
)
hostile_float = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, -1e-308, 5e-324]),
    st.floats(),
)
scalar_any = st.one_of(
    st.none(),
    st.booleans(),
    hostile_int,
    hostile_float,
    st.text(max_size=16),
    st.binary(max_size=16),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=8)),
    invalid_utf8,
)
small_any = st.recursive(
    scalar_any,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
any_value = st.one_of(small_any, st.sampled_from([DEEP_LIST, DEEP_MAP]))


def _unwrap(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def _plausible_str(t: mi.StrType) -> st.SearchStrategy[str]:
    lo, hi = t.min_length or 0, min(t.max_length or 64, 64)
    if t.pattern:
        return st.from_regex(t.pattern, fullmatch=True).filter(lambda s: lo <= len(s) <= hi)
    return st.text(min_size=lo, max_size=max(lo, hi))


def _plausible_int(t: mi.IntType) -> st.SearchStrategy[int]:
    lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**63))
    hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**63 - 1)
    # Small ids and limits hit existing rows; the bounds hit the edges.
    small = st.integers(max(lo, -3), min(hi, 50)) if max(lo, -3) <= min(hi, 50) else st.nothing()
    return st.one_of(small, st.sampled_from([lo, hi]), st.integers(lo, hi))


def _plausible_float(t: mi.FloatType) -> st.SearchStrategy[float]:
    lo = t.ge if t.ge is not None else t.gt
    hi = t.le if t.le is not None else t.lt
    return st.floats(
        lo,
        hi,
        allow_nan=False,
        allow_infinity=False,
        exclude_min=t.gt is not None,
        exclude_max=t.lt is not None,
    )


def plausible(t: mi.Type) -> st.SearchStrategy[Any]:
    """A value that satisfies the declared type and constraints (mostly)."""
    t = _unwrap(t)
    match t:
        case mi.StrType():
            return _plausible_str(t)
        case mi.IntType():
            return _plausible_int(t)
        case mi.FloatType():
            return _plausible_float(t)
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.LiteralType():
            return st.sampled_from(list(t.values))
        case mi.DateTimeType():
            return st.datetimes(timezones=st.just(dt.UTC))
        case mi.ListType():
            hi = min(t.max_length if t.max_length is not None else 4, 4)
            return st.lists(plausible(t.item_type), min_size=t.min_length or 0, max_size=hi)
        case mi.DictType():
            return st.dictionaries(plausible(t.key_type), plausible(t.value_type), max_size=3)
        case mi.UnionType():
            return st.one_of([plausible(x) for x in t.types])
        case mi.StructType():
            # Clean: a hostile list repeats this value 10,000 times, and must not
            # repeat hostile lists or deep values inside it (memory would explode).
            return struct_dict(t, mode="clean")
        case _:
            return small_any


def hostile(t: mi.Type) -> st.SearchStrategy[Any]:
    """A value its field was not made for: the edges of its type, or another type."""
    t = _unwrap(t)
    match t:
        case mi.StrType():
            own = hostile_text
        case mi.IntType():
            own = hostile_int
        case mi.FloatType():
            own = hostile_float
        case mi.ListType():
            item = plausible(t.item_type)
            cap = t.max_length if t.max_length is not None else 10_000
            own = st.one_of(
                st.just([]),
                item.map(lambda v, n=cap + 1: [v] * n),  # one over the cap
                item.map(lambda v: [v] * 10_000),
                st.lists(hostile(t.item_type), min_size=1, max_size=3),
            )
        case mi.DictType():
            own = st.one_of(
                st.dictionaries(st.text(max_size=4), any_value, max_size=3),
                st.just({"deep": DEEP_LIST}),
                giant_text.map(lambda g: {"big": g}),
                st.just({f"k{i}": i for i in range(10_000)}),
            )
        case mi.UnionType():
            own = st.one_of([hostile(x) for x in t.types])
        case mi.StructType():
            own = struct_dict(t, mode="many")
        case _:
            own = any_value
    return st.one_of(own, any_value)


def struct_dict(t: mi.StructType, *, mode: str | None = None) -> st.SearchStrategy[Any]:
    """A map for struct `t`: all fields plausible, one hostile, or many hostile.

    Mixing the three keeps a good share of requests valid, so that dispatch and
    the store see hostile-but-valid values (NUL bytes, edge integers) too.
    """

    @st.composite
    def build(draw: st.DrawFn) -> dict[Any, Any]:
        how = mode or draw(st.sampled_from(["clean", "clean", "one", "many"]))
        names = [f.encode_name for f in t.fields]
        bad_one = draw(st.sampled_from(names)) if names and how == "one" else None
        out: dict[Any, Any] = {}
        for f in t.fields:
            # Required fields are usually present, optional ones sometimes.
            if f.encode_name != bad_one and draw(st.integers(0, 19)) >= (19 if f.required else 9):
                continue
            if f.encode_name == bad_one or (how == "many" and draw(st.booleans())):
                out[f.encode_name] = draw(hostile(f.type))
            else:
                out[f.encode_name] = draw(plausible(f.type))
        if how == "many" and draw(st.integers(0, 9)) == 0:
            out[draw(st.text(max_size=8))] = draw(any_value)  # an unknown field
        if t.tag_field is not None:
            out[t.tag_field] = t.tag
        return out

    return build()


REQUEST_TYPES: dict[str, mi.StructType] = {
    s.tag: s
    for s in _unwrap(mi.type_info(Request)).types  # type: ignore[attr-defined]
    if isinstance(s, mi.StructType) and isinstance(s.tag, str)
}


def requests(methods: list[str] | None = None) -> st.SearchStrategy[dict[Any, Any]]:
    """A request map for one of `methods` (default: all), fields plausible or hostile."""
    names = sorted(methods if methods is not None else REQUEST_TYPES)
    return st.sampled_from(names).flatmap(lambda m: struct_dict(REQUEST_TYPES[m]))


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Request)


def encode(req: dict[Any, Any]) -> bytes:
    return _encoder.encode(req)


def decodes(body: bytes) -> Request | None:
    """The request the protocol makes of `body`, or None if it does not validate."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None

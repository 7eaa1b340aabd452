"""Redacting JSON-like values: payloads, metadata, parameters.

The text rules are in :mod:`reverie.store.redaction`; here each string of a
value goes through them on its own (what a string becomes never depends on
the other strings of the value), string keys included, and the value of a
secret-looking key (``password``, ``api_key``, ``Authorization``...) is
replaced whole. Values are walked without recursion: payload depth is not
ours to bound. For batches of payloads with a text made from each (events'
observations), :func:`redact_objs_deriving` looks at everything at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reverie.store.redaction import (
    _CLEAN_SIZE,
    Finding,
    _clean,
    _dirty,
    _redact,
    _remember_all,
    marker,
    redact,
)
from reverie.store.secret_rules import is_reference, key_kind

__all__ = ["redact_obj", "redact_obj_deriving", "redact_obj_with_report", "redact_objs_deriving"]


def redact_obj(obj: Any) -> Any:
    """A copy of a JSON-like value with every string redacted.

    Dicts, lists (and tuples, which come back as lists) are walked; string
    keys and values go through :func:`redact`; the value of a secret-looking
    key (``password``, ``api_key``, ``Authorization``, ``cookie``...) is
    replaced whole when it is a non-empty string or a number, as is every
    string directly in a list under such a key. Other values are returned
    as they are.
    """
    if isinstance(obj, (dict, list, tuple)):
        return _copy_redacted(obj)
    return _leaf(obj, "", "", None)


def redact_obj_with_report(obj: Any) -> tuple[Any, list[Finding]]:
    """:func:`redact_obj`, plus the findings, each with the JSON pointer of its string."""
    findings: list[Finding] = []
    return _walk(obj, findings), findings


# ---------------------------------------------------------------------------
# JSON-like structures


def _walk(root: Any, findings: list[Finding] | None) -> Any:
    """Redact a JSON-like value without recursion (payload depth is not ours to bound).

    Each string is redacted on its own: what a string becomes never depends
    on the other strings of the value. (_copy and _finish do the same with
    less work; this walk also reports.)
    """
    if not isinstance(root, (dict, list, tuple)):
        return _leaf(root, "", "", findings)
    report = findings is not None
    out: Any = {} if isinstance(root, dict) else []
    stack: list[tuple[Any, Any, str, str]] = [(root, out, "", "")]
    while stack:
        src, dst, path, secret = stack.pop()
        is_dict = isinstance(src, dict)
        for key, value in src.items() if is_dict else enumerate(src):
            child_secret = secret
            if is_dict:
                child_secret = ""
                if isinstance(key, str):
                    child_secret = key_kind(key)
                    key = _redact(key)[0]
            child_path = f"{path}/{_pointer(key)}" if report else ""
            if isinstance(value, (dict, list, tuple)):
                child: Any = {} if isinstance(value, dict) else []
                inherited = "" if isinstance(value, dict) else child_secret
                stack.append((value, child, child_path, inherited))
                value = child
            else:
                value = _leaf(value, child_secret, child_path, findings)
            if is_dict:
                dst[key] = value
            else:
                dst.append(value)
    return out


# Strings set aside by _copy: (string, container, key or index) of values, and
# (string, dict) of keys.
_Values = list[tuple[str, Any, Any]]
_Keys = list[tuple[str, dict[Any, Any]]]


def _copy(root: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> tuple[Any, _Values, _Keys]:
    """:func:`redact_obj`'s copy, but for the strings not known to be clean: set aside.

    One walk copies the structure and replaces the values of secret-looking
    keys, as _walk does; the strings it sets aside are still to be redacted
    (see _finish). Their keys are in the copy as they are. Exact types are
    tested first (``type(v) is str``): that is most of a payload, and cheaper
    than isinstance; subclasses take the isinstance branches, as in _walk.
    """
    clean = _clean
    kinds = _key_kinds
    values: _Values = []
    keys: _Keys = []
    out: Any = {} if isinstance(root, dict) else []
    stack: list[tuple[Any, Any, str]] = [(root, out, "")]
    while stack:
        src, dst, secret = stack.pop()
        if isinstance(src, dict):
            for key, value in src.items():
                kind = ""
                if type(key) is str or isinstance(key, str):
                    # Clean keys only (the cache never holds a secret): known, known clean.
                    known = kinds.get(key)
                    if known is not None:
                        kind = known
                    elif key in clean:
                        kind = _cache_kind(key)
                    else:
                        kind = key_kind(key)
                        if key:
                            keys.append((key, dst))
                cls = type(value)
                if cls is str:
                    if kind and value and not is_reference(value):
                        value = marker(kind)
                    elif value and value not in clean:
                        values.append((value, dst, key))
                elif cls is dict or cls is list:
                    child: Any = {} if cls is dict else []
                    stack.append((value, child, "" if cls is dict else kind))
                    value = child
                elif kind or not (value is None or cls is bool or cls is int or cls is float):
                    value = _other(value, kind, dst, key, values, stack)
                dst[key] = value
        else:
            for value in src:
                cls = type(value)
                if cls is str:
                    if secret and value and not is_reference(value):
                        value = marker(secret)
                    elif value and value not in clean:
                        values.append((value, dst, len(dst)))
                elif cls is dict or cls is list:
                    child = {} if cls is dict else []
                    stack.append((value, child, "" if cls is dict else secret))
                    value = child
                elif secret or not (value is None or cls is bool or cls is int or cls is float):
                    value = _other(value, secret, dst, len(dst), values, stack)
                dst.append(value)
    return out, values, keys


def _other(
    value: Any, kind: str, dst: Any, slot: Any, values: _Values, stack: list[tuple[Any, Any, str]]
) -> Any:
    """_copy's step for a value that is not a plain str, dict or list, or under a secret key."""
    if isinstance(value, str):
        if kind and value and not is_reference(value):
            return marker(kind)
        if value and value not in _clean:
            values.append((value, dst, slot))
        return value
    if isinstance(value, (dict, list, tuple)):
        child: Any = {} if isinstance(value, dict) else []
        stack.append((value, child, "" if isinstance(value, dict) else kind))
        return child
    if kind and isinstance(value, (int, float)) and not isinstance(value, bool):
        return marker(kind)
    return value


# The kind of each clean key (key_kind), for _copy: keys repeat in every payload.
_key_kinds: dict[str, str] = {}


def _cache_kind(key: str) -> str:
    kind = key_kind(key)
    if len(_key_kinds) >= _CLEAN_SIZE:
        _key_kinds.clear()
    _key_kinds[key] = kind
    return kind


def _finish(values: _Values, keys: _Keys) -> bool:
    """Redact the strings _copy set aside, in place; whether any changed.

    Each with its own mask, not the joined text's: a superset can differ in
    a corner (an alternative that matches without a secret, as a flag
    ``-q x`` does, can hide a match inside it), and what a string becomes
    must not depend on the other strings.

    A dict with a key that changes is rebuilt in its order, keys redacted,
    so that two keys that become one marker keep the first one's place and
    the last one's value, as _walk's assignments do.
    """
    changed = False
    for text, dst, slot in values:
        redacted = _redact(text)[0]
        if redacted is not text:
            dst[slot] = redacted
            changed = True
    renamed: dict[int, dict[Any, Any]] = {}
    for text, dst in keys:
        if _redact(text)[0] is not text:
            renamed[id(dst)] = dst
    for dst in renamed.values():
        items = list(dst.items())
        dst.clear()
        for key, value in items:
            dst[_redact(key)[0] if isinstance(key, str) else key] = value
    return changed or bool(renamed)


def _copy_redacted(root: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> Any:
    out, values, keys = _copy(root)
    texts = [v[0] for v in values] + [k[0] for k in keys]
    if texts:
        if _dirty(texts, [0] * len(texts)):
            _finish(values, keys)
        else:
            _remember_all(texts)
    return out


def redact_obj_deriving(obj: Any, derive: Callable[[Any], str]) -> tuple[Any, str]:
    """``(redact_obj(obj), redact(derive(redact_obj(obj))))``, at the cost of one redaction.

    For a text made from a payload (an event's observation): see
    :func:`redact_objs_deriving`.
    """
    return redact_objs_deriving([obj], lambda _, out: derive(out))[0]


def redact_objs_deriving(
    objs: Sequence[Any], derive: Callable[[int, Any], str]
) -> list[tuple[Any, str]]:
    """``(redact_obj(obj), redact(derive(i, redact_obj(obj))))`` for each ``objs[i]``.

    For texts made from payloads (events' observations), a batch at a time:
    the strings of every payload and every text are looked at together, in
    one joined text, and when none has anything to redact (most), nothing
    is scanned twice. ``derive`` is first called on a copy whose strings are
    not yet redacted; where that was wrong, the payload is redacted,
    ``derive`` called again on the result, and its text redacted on its own.
    ``derive`` must be a pure function.

    Which payloads need that: no alternative of the main pattern matches
    across a newline, each starts with a literal character and consumes no
    newline, and its lookarounds see the same at a newline as at the start
    or end of a text (but a flag's value, which is then empty: no secret).
    So wherever a text holds a secret, the pattern, restricted to the joined
    text's mask (a superset of each text's), matches inside that text in the
    joined text too; and a <private> or PEM block or a marker in a text is
    found by _BLOCK_START in the joined text, over that text (a match may
    run across a newline: all the texts it touches count).
    """
    results: list[tuple[Any, str]] = []
    pending: list[tuple[int, _Values, _Keys]] = []
    texts: list[str] = []
    owners: list[int] = []  # the index in ``pending`` of each text's payload
    # A text already in ``texts`` is not scanned again (events of a session
    # repeat strings: a PreToolUse's command in its PostToolUse): its payload
    # is dirty if the payload that holds it first is (at worst a clean one
    # is then redacted string by string, as a dirty one is: the same result).
    first: dict[str, int] = {}
    shared: list[tuple[int, int]] = []  # (owner, owner that scans the text)
    clean = _clean
    for i, obj in enumerate(objs):
        if not isinstance(obj, (dict, list, tuple)):
            out = redact_obj(obj)
            results.append((out, redact(derive(i, out))))
            continue
        out, values, keys = _copy(obj)
        text = derive(i, out)  # right if the strings set aside are clean, as they mostly are
        results.append((out, text))
        mine = [v[0] for v in values]
        mine += [k[0] for k in keys]
        if text and text not in clean:
            mine.append(text)
        if mine:
            owner = len(pending)
            pending.append((i, values, keys))
            for t in mine:
                scans = first.get(t)
                if scans is None:
                    first[t] = owner
                    texts.append(t)
                    owners.append(owner)
                elif scans != owner:
                    shared.append((owner, scans))
    dirty = _dirty(texts, owners)
    dirty.update([owner for owner, scans in shared if scans in dirty])
    _remember_all([t for t, owner in zip(texts, owners, strict=True) if owner not in dirty])
    for n in sorted(dirty):
        i, values, keys = pending[n]
        out, text = results[i]
        if _finish(values, keys):
            text = derive(i, out)
        results[i] = (out, redact(text))
    return results


def _leaf(value: Any, secret: str, path: str, findings: list[Finding] | None) -> Any:
    """A scalar; ``secret`` is the kind when it sits under a secret-looking key."""
    if isinstance(value, str):
        if secret and value and not is_reference(value):
            if findings is not None:
                findings.append(Finding(secret, 0, len(value), path))
            return marker(secret)
        text, found = _redact(value)
        if findings is not None:
            findings.extend(f._replace(path=path) for f in found)
        return text
    if secret and isinstance(value, (int, float)) and not isinstance(value, bool):
        if findings is not None:
            findings.append(Finding(secret, 0, len(str(value)), path))
        return marker(secret)
    return value


def _pointer(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")

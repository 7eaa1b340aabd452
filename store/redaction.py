"""Secret redaction: what reverie removes before it stores or returns text.

Every string that enters the store (event payloads, memories) and every
string the daemon hands back goes through :func:`redact` (or
:func:`redact_obj` for JSON-like payloads). Each removed secret becomes a
marker ``[REDACTED:kind]``; :func:`redact_with_report` also says what it
removed as :class:`Finding` (kind and span in the input, never the secret).

What is removed
---------------
* ``<private>...</private>`` spans, case-insensitive, across lines, nested
  (``<private>a <private>b</private> c</private>`` drops ``a``, ``b`` and
  ``c``). An unclosed ``<private>`` drops everything to the end of the text:
  the user marked where the private part starts, and a missing end tag most
  likely means the text was cut (payload trimming) or the tag was forgotten;
  over-dropping loses a little memory, leaking is the irreversible mistake.
  A stray ``</private>`` is left alone. The span becomes
  ``[REDACTED:private]`` rather than nothing, so that the text around it
  cannot join into a new tag (``<priv<private>x</private>ate>``).
* PEM private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to the
  matching ``END`` line: RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP ``... KEY
  BLOCK``). Without an ``END`` line the block runs to the end of the text, for
  the same reason as ``<private>``. Certificates and public keys are kept.
* Provider tokens, recognised by their prefixes: OpenAI ``sk-``/``sk-proj-``,
  Anthropic ``sk-ant-``, GitHub ``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``,
  GitLab ``glpat-`` (and its other ``gl*-`` tokens), Slack ``xox?-``/``xapp-``
  and webhook URLs, Stripe ``sk_/rk_live_/test_`` and ``whsec_``, AWS access
  key ids ``AKIA ASIA ABIA ACCA``, Google ``AIza``, ``GOCSPX-`` and ``ya29.``,
  Hugging Face ``hf_``, npm ``npm_``, PyPI ``pypi-``, Twilio ``SK``+32 hex,
  SendGrid ``SG.``, DigitalOcean, Shopify, Databricks, Linear, Groq, xAI,
  Replicate, Perplexity, Mailgun and ``age`` secret keys. Prefixes that are
  also common in ordinary words (``sk-``, ``hf_``, ``r8_``, ``Bearer``) only
  count when the rest looks random (mixed case with digits, or hex).
* JWTs: three or more dot-separated base64url segments starting ``eyJ``.
* Passwords in URLs: ``scheme://user:pass@host`` keeps the user and host.
* ``Authorization:`` values (``Bearer``/``Basic``/... keeps the scheme word)
  and bare ``Bearer <token>``.
* Assignments to secret-looking names, in shell/.env, YAML, JSON, TOML, INI,
  XML and code forms: ``FOO_API_KEY=...``, ``export DB_PASSWORD="..."``,
  ``SECRET_TOKEN: ...``, ``"client_secret": "..."``, ``--token=...``,
  ``--password ...``, ``<password>...</password>``, ``'api_key' => '...'``.
  A name is secret-looking when it *ends* with ``password``, ``passwd``,
  ``passphrase``, ``secret``, ``token``, ``credential(s)`` (any prefix:
  ``PGPASSWORD``, ``GITHUB_TOKEN``), with ``pass`` or ``pwd`` as a word of
  their own (``DB_PASS``, ``dbPass``; not ``bypass``, not the shell's
  ``PWD``), or with ``key`` qualified as ``api``/``access``/``secret``/
  ``private``/``client``/... (``AWS_SECRET_ACCESS_KEY``, ``x-api-key``; not
  ``primary_key`` or ``public_key``). Only the value is replaced.

What is kept
------------
Values that are not secrets but references to one: empty values,
``${VAR}``/``$VAR``, ``{{ secrets.X }}``, ``<your-key>``, ``%(x)s``,
masks (``****``, ``xxxx``), null/boolean words, type annotations
(``password: str``), and code (``api_key=api_key``, ``token = get_token()``,
``self.password``, ``os.environ["TOKEN"]``, a bare identifier after
``name = `` or inside a call). Prose is kept: a ``:`` followed by lowercase
words that run on (``forgot your password: click here to reset``). An
unquoted value ends at whitespace, a quote, a comma or a ``&`` that starts
the next URL parameter; quote a value with spaces to have all of it removed.
UUIDs, hashes, git SHAs, base64 data, URLs without a password and the words
"password" or "token" in prose are never touched.

Properties
----------
* Linear time: every pattern either has bounded repetition or consumes what
  it scanned, so no input makes the scan quadratic (the tests run 1 MB
  adversarial inputs under a time bound).
* Idempotent: ``redact(redact(x)) == redact(x)``; markers are never
  re-redacted and never combine with the text around them into a new match.
* Pure standard library and cheap to import: the Claude Code hook imports it.
* Local: what a string becomes depends on that string alone, never on the
  other strings of a payload or a batch.
* Cheap where nothing is secret, which is most of the time: strings found
  clean are remembered (a bounded set that never holds a secret), a payload's
  or a batch's strings are looked at once, joined, and only the payloads in
  which the pattern matches are redacted string by string
  (:func:`redact_objs_deriving`).

Layout
------
This module is the engine: the public API, ``<private>``/PEM spans, the cut
points that make it idempotent, and JSON walking. What a secret looks like is
in :mod:`~reverie.store.secret_patterns`, whether a name or value is one in
:mod:`~reverie.store.secret_rules`, and where a matched value starts and ends
in :mod:`~reverie.store.secret_scan`.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from reverie.store.secret_patterns import Lazy, fold, mask_of, pattern_for
from reverie.store.secret_rules import MARKER_PREFIX, is_reference, is_secret_name, key_kind
from reverie.store.secret_scan import Hit, scan_segment

__all__ = [
    "Finding",
    "is_secret_name",
    "marker",
    "redact",
    "redact_obj",
    "redact_obj_deriving",
    "redact_obj_with_report",
    "redact_objs_deriving",
    "redact_with_report",
]


class Finding(NamedTuple):
    """One removed secret: its kind and where it was, never the secret itself.

    ``start``/``end`` index the input string; ``path`` is empty for text and a
    JSON pointer (``/tool_input/command``) for :func:`redact_obj_with_report`.
    """

    kind: str
    start: int
    end: int
    path: str = ""


def marker(kind: str) -> str:
    """The text that replaces a secret of this kind."""
    return f"[REDACTED:{kind}]"


# Where a second pass must cut the text: <private> regions and PEM private key
# blocks (dropped whole) and markers a first pass left (see _blocks).
_BLOCK_START = Lazy(
    r"<(?i:\s{0,8}+private(?:\s[^<>\[\]]{0,200}+)?>)"
    r"|-(?:-{2,4}+ ?BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)? ?-{3,5}+)"
    r"|\[(?:REDACTED:[a-z0-9_]{1,40}+\])"
)
_PRIVATE_TAG = Lazy(r"<\s{0,8}+(?P<close>/\s{0,8}+)?(?i:private)(?:\s[^<>\[\]]{0,200}+)?>")
_PEM_END = Lazy(r"-{3,5}+ ?END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)? ?-{3,5}+")


# ---------------------------------------------------------------------------
# Public API


def redact(text: str) -> str:
    """``text`` with every secret replaced by its marker and private spans dropped."""
    return redact_with_report(text)[0]


def redact_with_report(text: str) -> tuple[str, list[Finding]]:
    """Redact ``text`` and list what was removed (kind and span in ``text``)."""
    return _redact(text)


def _redact(text: str) -> tuple[str, list[Finding]]:
    if not text or (len(text) <= _CLEAN_CHARS and text in _clean):
        return text, []
    findings = _scan(text)
    if not findings:
        _remember(text)
        return text, findings
    return _apply(text, findings), findings


def _apply(text: str, findings: list[Finding]) -> str:
    parts: list[str] = []
    pos = 0
    for f in findings:
        parts.append(text[pos : f.start])
        parts.append(marker(f.kind))
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


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
# Strings known to hold nothing to redact
#
# Payloads repeat most of their strings (keys, session ids, paths, tool names,
# commands), and redacting a string depends on nothing but the string. Only
# strings that came out unchanged are remembered, so the set never holds a
# secret; it is bounded, and emptied when full (refilling it is cheap).

_CLEAN_CHARS = 160  # longer strings (outputs, prompts) are rarely seen twice
_CLEAN_SIZE = 4096
_clean: set[str] = set()


def _remember(text: str) -> None:
    if len(text) <= _CLEAN_CHARS:
        if len(_clean) >= _CLEAN_SIZE:
            _clean.clear()
        _clean.add(text)


def _remember_all(texts: list[str]) -> None:
    if len(_clean) + len(texts) > _CLEAN_SIZE:
        _clean.clear()
    _clean.update([t for t in texts if len(t) <= _CLEAN_CHARS])


# ---------------------------------------------------------------------------
# Scanning


def _scan(text: str, mask: int | None = None) -> list[Finding]:
    """Findings in ``text``, sorted and disjoint; ``mask``: mask_of(text), or all alternatives."""
    low = fold(text)
    if mask is None:
        mask = mask_of(text, low)
    blocks = _blocks(text) if "private" in low or MARKER_PREFIX in text else []
    if not mask and not blocks:
        return []
    hits: list[Hit] = []
    pos = 0
    for start, end, kind in blocks:
        if start > pos and mask:
            scan_segment(text, pos, start, mask, hits)
        if kind:
            hits.append((kind, start, end))
        pos = end
    if pos < len(text) and mask:
        scan_segment(text, pos, len(text), mask, hits)
    if not hits:  # the common case (a JSON payload scans every string): skip the copy
        return []
    return [Finding(kind, start, end) for kind, start, end in hits]


def _blocks(text: str) -> list[tuple[int, int, str]]:
    """Spans of <private> regions, PEM private key blocks and markers (kind "").

    Scanning stops at the edges of each span. Markers already in the text are
    edges too, so that a second pass cuts the text where the first pass cut
    it: this is what makes redaction idempotent around dropped blocks.
    """
    spans: list[tuple[int, int, str]] = []
    pos = 0
    while (m := _BLOCK_START.search(text, pos)) is not None:
        first = text[m.start()]
        if first == "[":
            end, kind = m.end(), ""
        elif first == "<":
            end, kind = _private_end(text, m.end()), "private"
        else:
            e = _PEM_END.search(text, m.end())
            end, kind = (e.end() if e else len(text)), "private_key"
        spans.append((m.start(), end, kind))
        pos = end
    return spans


def _private_end(text: str, pos: int) -> int:
    depth = 1
    for tag in _PRIVATE_TAG.finditer(text, pos):
        depth += -1 if tag.group("close") else 1
        if depth == 0:
            return tag.end()
    return len(text)


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
    clean = _clean
    for i, obj in enumerate(objs):
        if not isinstance(obj, (dict, list, tuple)):
            out = redact_obj(obj)
            results.append((out, redact(derive(i, out))))
            continue
        out, values, keys = _copy(obj)
        text = derive(i, out)  # right if the strings set aside are clean, as they mostly are
        results.append((out, text))
        before = len(texts)
        texts += [v[0] for v in values]
        texts += [k[0] for k in keys]
        if text and text not in clean:
            texts.append(text)
        if len(texts) > before:
            owners += [len(pending)] * (len(texts) - before)
            pending.append((i, values, keys))
    dirty = _dirty(texts, owners)
    _remember_all([t for t, owner in zip(texts, owners, strict=True) if owner not in dirty])
    for n in sorted(dirty):
        i, values, keys = pending[n]
        out, text = results[i]
        if _finish(values, keys):
            text = derive(i, out)
        results[i] = (out, redact(text))
    return results


def _dirty(texts: list[str], owners: list[int]) -> set[int]:
    """The owners of the texts that may hold something to redact (see redact_objs_deriving).

    ASCII texts are joined apart from the others: a single non-ASCII
    character makes the whole joined text wider, and every search over it
    slower.
    """
    dirty: set[int] = set()
    ascii_texts: list[str] = []
    ascii_owners: list[int] = []
    other_texts: list[str] = []
    other_owners: list[int] = []
    for text, owner in zip(texts, owners, strict=True):
        if text.isascii():
            ascii_texts.append(text)
            ascii_owners.append(owner)
        else:
            other_texts.append(text)
            other_owners.append(owner)
    for group, group_owners in ((ascii_texts, ascii_owners), (other_texts, other_owners)):
        if not group:
            continue
        joined = "\n".join(group)
        low = fold(joined)
        mask = mask_of(joined, low)
        blocks = "private" in low or MARKER_PREFIX in joined
        if mask or blocks:
            ends = [end - 1 for end in itertools.accumulate(len(t) + 1 for t in group)]
            dirty |= _touched(joined, mask, blocks, ends, group_owners)
    return dirty


def _touched(joined: str, mask: int, blocks: bool, ends: list[int], owners: list[int]) -> set[int]:
    """The owners of the texts in which the pattern (``mask``) or _BLOCK_START matches.

    A flag or an XML element whose name is not secret-looking holds no
    secret: the search goes on from the next character (not past the match:
    a secret could start inside it), and only the first match that may hold
    one counts for a payload, whose other texts are then passed over.
    """
    dirty: set[int] = set()
    if mask:
        search = pattern_for(mask).search
        pos = 0
        while (m := search(joined, pos)) is not None:
            group = m.lastgroup
            if (group == "f" and not key_kind(m.group("fname"))) or (
                group == "x" and not is_secret_name(m.group("xname"))
            ):
                pos = m.start() + 1
                continue
            n = bisect.bisect_left(ends, m.start())
            owner = owners[n]
            dirty.add(owner)
            while n < len(owners) and owners[n] == owner:  # the payload's texts are in a row
                n += 1
            if n == len(owners):
                break
            pos = ends[n - 1] + 1
    if blocks:
        for m in _BLOCK_START.finditer(joined):
            first = bisect.bisect_left(ends, m.start())
            last = bisect.bisect_left(ends, m.end() - 1)
            dirty.update(owners[first : last + 1])
    return dirty


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

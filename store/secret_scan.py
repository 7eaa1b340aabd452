"""Where a matched secret starts and ends: one handler per kind of match.

:func:`scan_segment` runs the main pattern over a stretch of text and, for
each match, asks the handler of its kind (token, assignment, ``Authorization``
header, command-line flag, XML element) for the span of the secret value, if
any, and where to resume. Hits are ``(kind, start, end)``; the engine in
:mod:`reverie.store.redaction` turns them into findings.
"""

from __future__ import annotations

import re

from reverie.store.secret_patterns import JWT, META, RANDOM, Lazy, pattern_for
from reverie.store.secret_rules import (
    TYPE_WORDS,
    code_like,
    env_form,
    is_reference,
    is_secret_name,
    key_kind,
    kind_of_name,
    looks_like_prose,
    name_ok,
    random_enough,
    refine,
    start_of_name,
)

Hit = tuple[str, int, int]  # (kind, start, end) of a secret value

_HEAD = 128  # a value is judged on its first _HEAD characters

_UNQUOTED = Lazy(r"[^\s\"'`&,]*+(?:&(?![\w.\[\]-]{1,64}+=)[^\s\"'`&,]*+)*+")
_QUOTED = {
    '"': Lazy(r'[^"\\\n]*+(?:\\.[^"\\\n]*+)*+'),
    "'": Lazy(r"[^'\\\n]*+(?:\\.[^'\\\n]*+)*+"),
    "`": Lazy(r"[^`\\]*+(?:\\.[^`\\]*+)*+"),
    '\\"': Lazy(r'[^"\\\n]*+(?:\\[^"\n][^"\\\n]*+)*+'),
}
_XML_VALUE = Lazy(r"[^<\n]*+")
_AUTH_SCHEME = Lazy(
    r"(?i:bearer|basic|token|bot|apikey|api-key|key|digest|negotiate|ntlm|hmac|"
    r"signature|sso-key|aws4-hmac-sha256)[ \t]{1,8}+"
)
_STRING_PREFIXES = frozenset("fFbBrRuU")
_STRING_OPENER = Lazy(r"[fFbBrRuU]{0,2}(?:\\\"|[\"'`])")
_AUTH_LINE = Lazy(r"[^\n]*+")


def scan_segment(text: str, pos: int, end: int, mask: int, found: list[Hit]) -> None:
    """Append the hits in ``text[pos:end]`` to ``found``, in order; ``mask`` as in pattern_for."""
    search = pattern_for(mask).search
    while pos < end and (m := search(text, pos, end)) is not None:
        group = m.lastgroup
        assert group is not None
        if group[0] == "t":
            pos = _on_token(m, group, found)
        elif group == "x":
            pos = _on_xml(text, m, end, found)
        elif group == "f":
            pos = _on_flag(text, m, end, found)
        elif META[group][0] == "authorization":
            pos = _on_authorization(text, m, group, end, found)
        else:
            pos = _on_assignment(text, m, group, end, found)


def _on_token(m: re.Match[str], group: str, found: list[Hit]) -> int:
    kind, check = META[group]
    s_group = "s" + group[1:]
    start, end = m.span(s_group) if m.re.groupindex.get(s_group) else m.span()
    if start < 0:
        start, end = m.span()
    secret = m.string[start:end]
    if check == JWT:
        secret = secret.rstrip(".")
        end = start + len(secret)
        parts = secret.split(".")
        if len(parts) < 3 or not parts[1] or len(parts[0]) + len(parts[1]) < 20:
            return m.end()
    elif (check == RANDOM and not random_enough(secret)) or (
        kind == "url_password" and is_reference(secret)
    ):
        return m.end()
    if kind == "url_password":
        kind = refine(m.string, start, end, kind)
    found.append((kind, start, end))
    return m.end()


def _on_assignment(text: str, m: re.Match[str], group: str, end: int, found: list[Hit]) -> int:
    kind, _ = META[group]
    kw_start = m.start()
    sep_start = m.start("p" + group)
    name_start = start_of_name(text, kw_start)
    name = text[name_start:sep_start]
    keyword = text[kw_start:sep_start].lower()
    sep = text[sep_start : m.end()]
    if not name_ok(name, keyword):
        return m.end()
    span = _value_span(text, m.end(), end, name, sep, name_start)
    if span is None:
        return m.end()
    vstart, vend, resume = span
    found.append((refine(text, vstart, vend, kind), vstart, vend))
    return resume


def _on_authorization(text: str, m: re.Match[str], group: str, end: int, found: list[Hit]) -> int:
    """`Authorization: Bearer x`: keep the scheme word, remove the credentials."""
    sep = text[m.start("p" + group) : m.end()]
    if not any(c in sep for c in ":="):
        return m.end()
    pos = m.end()
    quote = _STRING_OPENER.match(text, pos, end)
    scheme = _AUTH_SCHEME.match(text, quote.end() if quote else pos, end)
    if quote is None and scheme is None:
        # A bare value: judged like any other unquoted assignment value.
        name_start = start_of_name(text, m.start())
        span = _value_span(text, pos, end, text[name_start : m.start() + 13], sep, name_start)
        if span is None:
            return m.end()
        vstart, vend, resume = span
    else:
        vstart = scheme.end() if scheme else pos + len(quote.group() if quote else "")
        # Quoted: up to the closing quote. A raw header line: to its end, quotes
        # and all (Digest username="x", response="...").
        closing = quote.group().lstrip("fFbBrRuU") if quote else ""
        if not closing:  # the whole header may sit in quotes: -H "Authorization: Basic x"
            before = text[start_of_name(text, m.start()) - 1 : start_of_name(text, m.start())]
            closing = before if before in ('"', "'") else ""
        value_re = _QUOTED[closing] if closing else _AUTH_LINE
        v = value_re.match(text, vstart, end)
        assert v is not None
        value = v.group().rstrip(" \t\r\\,;")
        if not value or is_reference(value.split()[0]):
            return m.end()
        vend = resume = vstart + len(value)
    found.append((refine(text, vstart, vend, "authorization"), vstart, vend))
    return resume


def _on_flag(text: str, m: re.Match[str], end: int, found: list[Hit]) -> int:
    # Without a secret, the scan resumes inside the match: a flag-like prefix
    # (-ghp_... x) must not hide a token in its name. Whether the flag
    # alternative is in the pattern depends on words nearby (mask_of), and the
    # result must not.
    name = m.group("fname")
    kind = key_kind(name)
    if not kind:
        return m.start() + 1
    name_start = m.start("fname")
    pos = m.end()
    if kind == "authorization" and (scheme := _AUTH_SCHEME.match(text, pos, end)):
        pos = scheme.end()  # --authorization Bearer x: as the header, keep the scheme word
    span = _value_span(text, pos, end, name, " ", name_start)
    if span is None:
        return m.start() + 1
    vstart, vend, resume = span
    found.append((refine(text, vstart, vend, kind), vstart, vend))
    return resume


def _on_xml(text: str, m: re.Match[str], end: int, found: list[Hit]) -> int:
    name = m.group("xname")  # as for a flag: without a secret, resume inside
    if not is_secret_name(name):
        return m.start() + 1
    v = _XML_VALUE.match(text, m.end(), end)
    assert v is not None
    value = v.group().strip()
    if not value or is_reference(value):
        return m.start() + 1
    vstart = text.index(value, m.end())
    vend = vstart + len(value)
    kind = kind_of_name(name)
    found.append((refine(text, vstart, vend, kind), vstart, vend))
    return vend


def _value_span(
    text: str, pos: int, end: int, name: str, sep: str, name_start: int
) -> tuple[int, int, int] | None:
    """(start, end, resume) of the secret value at ``pos``, or None to keep it."""
    first = text[pos : pos + 1]
    if first in _QUOTED:
        return _quoted_span(text, pos, end, first)
    if first == "\\" and text.startswith('\\"', pos):
        return _quoted_span(text, pos, end, '\\"')
    if first in _STRING_PREFIXES:
        prefixed = _STRING_OPENER.match(text, pos, end)
        if prefixed is not None and prefixed.end() - pos >= 2:  # f"...", b'...'
            return _quoted_span(text, prefixed.end() - 1, end, text[prefixed.end() - 1])
    head = _UNQUOTED.match(text, pos, min(end, pos + _HEAD))
    assert head is not None
    value = head.group().rstrip(").;]}>")
    if not value or is_reference(value):
        return None
    if not env_form(name, sep, text, name_start):
        before = text[max(0, name_start - 2) : name_start].rstrip()[-1:]
        after = text[pos + len(value) : pos + len(value) + 1]
        if code_like(value, sep, before, after, name):
            return None
        if ":" in sep and looks_like_prose(text, pos, value, sep):
            return None
    if head.end() - pos == _HEAD and head.end() < end:
        full = _UNQUOTED.match(text, pos, end)
        assert full is not None
        value = full.group().rstrip(").;]}>")
    return pos, pos + len(value), pos + len(value)


def _quoted_span(text: str, pos: int, end: int, opener: str) -> tuple[int, int, int] | None:
    start = pos + len(opener)
    pattern = _QUOTED[opener]
    head = pattern.match(text, start, min(end, start + _HEAD))
    assert head is not None
    value = head.group()
    if not value or is_reference(value) or value.lower() in TYPE_WORDS:
        return None
    if head.end() - start == _HEAD:
        full = pattern.match(text, start, end)
        assert full is not None
        value = full.group()
    vend = start + len(value)
    resume = vend + len(opener) if text.startswith(opener, vend) else vend
    return start, vend, resume

"""Secret redaction: what reverie removes before it stores or returns text.

Every string that enters the store (event payloads, memories) and every
string the daemon hands back goes through :func:`redact` (or
:func:`~reverie.store.redaction_objects.redact_obj` for JSON-like payloads,
in redaction_objects.py). Each removed secret becomes a
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
  (redaction_objects.py's :func:`redact_objs_deriving`).

Layout
------
This module is the engine for text: the public API, ``<private>``/PEM spans,
the cut points that make it idempotent, the clean-string cache. JSON-like
values are walked in :mod:`~reverie.store.redaction_objects`. What a secret looks like is
in :mod:`~reverie.store.secret_patterns`, whether a name or value is one in
:mod:`~reverie.store.secret_rules`, and where a matched value starts and ends
in :mod:`~reverie.store.secret_scan`.
"""

from __future__ import annotations

import bisect
import itertools
from typing import NamedTuple

from reverie.store.secret_patterns import Lazy, fold, mask_of, pattern_for
from reverie.store.secret_rules import MARKER_PREFIX, is_secret_name, key_kind
from reverie.store.secret_scan import Hit, scan_segment

__all__ = [
    "Finding",
    "is_secret_name",
    "marker",
    "redact",
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
# Which of many texts may hold something to redact (one scan of them joined)


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

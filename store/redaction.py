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

Layout
------
This module is the engine: the public API, ``<private>``/PEM spans, the cut
points that make it idempotent, and JSON walking. What a secret looks like is
in :mod:`~reverie.store.secret_patterns`, whether a name or value is one in
:mod:`~reverie.store.secret_rules`, and where a matched value starts and ends
in :mod:`~reverie.store.secret_scan`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from reverie.store.secret_patterns import Lazy, mask_of
from reverie.store.secret_rules import MARKER_PREFIX, is_reference, is_secret_name, key_kind
from reverie.store.secret_scan import Hit, scan_segment

__all__ = [
    "Finding",
    "is_secret_name",
    "marker",
    "redact",
    "redact_obj",
    "redact_obj_with_report",
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
    return _redact(text, None)


def _redact(text: str, mask: int | None) -> tuple[str, list[Finding]]:
    if not text:
        return text, []
    findings = _scan(text, mask)
    if not findings:
        return text, findings
    parts: list[str] = []
    pos = 0
    for f in findings:
        parts.append(text[pos : f.start])
        parts.append(marker(f.kind))
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts), findings


def redact_obj(obj: Any) -> Any:
    """A copy of a JSON-like value with every string redacted.

    Dicts, lists (and tuples, which come back as lists) are walked; string
    keys and values go through :func:`redact`; the value of a secret-looking
    key (``password``, ``api_key``, ``Authorization``, ``cookie``...) is
    replaced whole when it is a non-empty string or a number, as is every
    string directly in a list under such a key. Other values are returned
    as they are.
    """
    return _walk(obj, None)


def redact_obj_with_report(obj: Any) -> tuple[Any, list[Finding]]:
    """:func:`redact_obj`, plus the findings, each with the JSON pointer of its string."""
    findings: list[Finding] = []
    return _walk(obj, findings), findings


# ---------------------------------------------------------------------------
# Scanning


def _scan(text: str, mask: int | None = None) -> list[Finding]:
    """Findings in ``text``, sorted and disjoint; ``mask`` may be precomputed (a superset)."""
    low = text.lower()
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
    """Redact a JSON-like value without recursion (payload depth is not ours to bound)."""
    if not isinstance(root, (dict, list, tuple)):
        return _leaf(root, "", "", None, findings)
    # One trigger check for the whole payload instead of one per string: most
    # payloads hold many short strings, and the check has a cost per call.
    joined = "\n".join(_strings(root))
    mask = mask_of(joined, joined.lower())
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
                    key = _redact(key, mask)[0]
            child_path = f"{path}/{_pointer(key)}" if report else ""
            if isinstance(value, (dict, list, tuple)):
                child: Any = {} if isinstance(value, dict) else []
                inherited = "" if isinstance(value, dict) else child_secret
                stack.append((value, child, child_path, inherited))
                value = child
            else:
                value = _leaf(value, child_secret, child_path, mask, findings)
            if is_dict:
                dst[key] = value
            else:
                dst.append(value)
    return out


def _strings(root: Any) -> Iterator[str]:
    """Every string key and value in a JSON-like value."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str):
                    yield key
                stack.append(value)
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def _leaf(
    value: Any, secret: str, path: str, mask: int | None, findings: list[Finding] | None
) -> Any:
    """A scalar; ``secret`` is the kind when it sits under a secret-looking key."""
    if isinstance(value, str):
        if secret and value and not is_reference(value):
            if findings is not None:
                findings.append(Finding(secret, 0, len(value), path))
            return marker(secret)
        text, found = _redact(value, mask)
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

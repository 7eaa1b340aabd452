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
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

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


_MARKER_PREFIX = "[REDACTED:"


class _Lazy:
    """A regex compiled on first use.

    The Claude Code hook imports this module in a fresh process each time, and
    most payloads need few of these patterns: compiling them all at import
    would cost milliseconds for nothing.
    """

    __slots__ = ("_pattern", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._pattern: re.Pattern[str] | None = None

    @property
    def compiled(self) -> re.Pattern[str]:
        if self._pattern is None:
            self._pattern = re.compile(self._source)
        return self._pattern

    def match(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        return self.compiled.match(text, pos, endpos)

    def fullmatch(self, text: str) -> re.Match[str] | None:
        return self.compiled.fullmatch(text)

    def search(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        return self.compiled.search(text, pos, endpos)

    def finditer(self, text: str, pos: int = 0) -> Iterator[re.Match[str]]:
        return self.compiled.finditer(text, pos)


# ---------------------------------------------------------------------------
# Patterns. Every alternative of the main pattern starts with a literal
# character so that the regex engine skips non-candidates in C; a word
# boundary, where wanted, is the lookbehind `(?<!\w.)` placed after that
# first character. Runs are possessive (`{n,}+`): once a token's prefix
# matched, the run is consumed whether or not it validates, so no position
# is scanned twice.

_RANDOM = 1  # validate that the token body looks random
_JWT = 2  # validate JWT structure

# (kind, pattern, check, triggers): a pattern can only match a text that
# contains one of its triggers (compared case-sensitively if the trigger has a
# capital, else with the text lowered); see _pattern_for.
_TOKENS: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    ("anthropic_key", r"s(?<!\w.)k-ant-[A-Za-z0-9_-]{20,}+", _RANDOM, ("sk-",)),
    ("openai_key", r"s(?<!\w.)k-[A-Za-z0-9_-]{20,}+", _RANDOM, ("sk-",)),
    ("stripe_key", r"s(?<!\w.)k_(?:live|test)_[A-Za-z0-9]{16,}+", 0, ("sk_",)),
    ("stripe_key", r"r(?<!\w.)k_(?:live|test)_[A-Za-z0-9]{16,}+", 0, ("rk_",)),
    ("stripe_webhook_secret", r"w(?<!\w.)hsec_[A-Za-z0-9+/=]{24,}+", 0, ("whsec_",)),
    (
        "github_token",
        r"g(?<!\w.)h[pousr]_[A-Za-z0-9]{30,}+",
        0,
        ("gh",),
    ),
    ("github_token", r"g(?<!\w.)ithub_pat_[A-Za-z0-9_]{40,}+", 0, ("github_pat",)),
    (
        "gitlab_token",
        r"g(?<!\w.)l(?:pat|dt|rt|ptt|cbt|ft|imt|oas|soat|agent)-[A-Za-z0-9_-]{20,}+",
        0,
        ("gl",),
    ),
    ("slack_token", r"x(?<!\w.)ox[abposrce]-[A-Za-z0-9-]{10,}+", 0, ("xox",)),
    ("slack_token", r"x(?<!\w.)app-\d-[A-Za-z0-9-]{10,}+", 0, ("xapp-",)),
    (
        "slack_webhook",
        r"h(?<!\w.)ooks\.slack\.com/(?:services|workflows|triggers)/(?P<s>[A-Za-z0-9/_-]{20,}+)",
        0,
        ("hooks.slack",),
    ),
    (
        "aws_access_key_id",
        r"A(?<!\w.)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        0,
        ("akia", "asia", "abia", "acca"),
    ),
    ("google_api_key", r"A(?<!\w.)Iza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", 0, ("aiza",)),
    (
        "age_secret_key",
        r"A(?<!\w.)GE-SECRET-KEY-1[0-9A-Z]{58}(?![A-Za-z0-9])",
        0,
        ("secret",),
    ),
    ("google_oauth_secret", r"G(?<!\w.)OCSPX-[A-Za-z0-9_-]{20,}+", 0, ("gocspx",)),
    ("google_oauth_token", r"y(?<!\w.)a29\.[0-9A-Za-z_-]{20,}+", 0, ("ya29.",)),
    ("huggingface_token", r"h(?<!\w.)f_[A-Za-z0-9]{30,}+", _RANDOM, ("hf_",)),
    ("npm_token", r"n(?<!\w.)pm_[A-Za-z0-9]{36,}+", 0, ("npm_",)),
    ("pypi_token", r"p(?<!\w.)ypi-[A-Za-z0-9_-]{50,}+", 0, ("pypi-",)),
    ("twilio_key", r"S(?<!\w.)K[0-9a-fA-F]{32}(?![0-9A-Za-z])", 0, ("SK",)),
    ("sendgrid_key", r"S(?<!\w.)G\.[A-Za-z0-9_-]{16,}+\.[A-Za-z0-9_-]{16,}+", 0, ("SG.",)),
    (
        "digitalocean_token",
        r"d(?<!\w.)o[opr]_v1_[a-f0-9]{64}(?![A-Za-z0-9])",
        0,
        ("_v1_",),
    ),
    (
        "shopify_token",
        r"s(?<!\w.)hp(?:at|ss|ca|pa)_[a-fA-F0-9]{32,}+(?![A-Za-z0-9])",
        0,
        ("shp",),
    ),
    ("databricks_token", r"d(?<!\w.)api[a-f0-9]{32}(?:-\d)?(?![A-Za-z0-9])", 0, ("dapi",)),
    ("linear_key", r"l(?<!\w.)in_api_[A-Za-z0-9]{40,}+", 0, ("lin_api",)),
    ("groq_key", r"g(?<!\w.)sk_[A-Za-z0-9]{48,}+", 0, ("sk_",)),
    ("xai_key", r"x(?<!\w.)ai-[A-Za-z0-9]{60,}+", 0, ("xai-",)),
    ("replicate_token", r"r(?<!\w.)8_[A-Za-z0-9]{30,}+", _RANDOM, ("r8_",)),
    ("perplexity_key", r"p(?<!\w.)plx-[A-Za-z0-9]{40,}+", 0, ("pplx-",)),
    ("mailgun_key", r"k(?<!\w.)ey-[0-9a-f]{32}(?![0-9A-Za-z])", 0, ("key",)),
    ("jwt", r"e(?<!\w.)yJ[A-Za-z0-9_-]{8,}+(?:\.[A-Za-z0-9_-]*+){0,4}", _JWT, ("eyJ",)),
    (
        "bearer_token",
        r"B(?<!\w.)earer[ \t]{1,8}+(?P<s>[A-Za-z0-9._~+/=-]{16,}+)",
        _RANDOM,
        ("bearer",),
    ),
    (
        "bearer_token",
        r"b(?<!\w.)earer[ \t]{1,8}+(?P<s>[A-Za-z0-9._~+/=-]{16,}+)",
        _RANDOM,
        ("bearer",),
    ),
    # The user part and the password cannot contain "/", so a scan never runs
    # past the next "://" and the backtracking to the last "@" is bounded.
    (
        "url_password",
        r"://[^\s:/?#@\"'<>\[\]]{0,200}+:(?P<s>[^\s/?#\"'<>]{1,500})@",
        0,
        ("://",),
    ),
)

# Keywords a secret-looking name ends with: (kind, the rest after the first
# letter, triggers); the first letter is spelled both ways as a literal.
_KEYWORDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("password", r"(?i:assword|asswd|assphrase|ass|wd)", ("pass", "pwd")),
    ("secret", r"(?i:ecret)", ("secret",)),
    ("token", r"(?i:oken)", ("token",)),
    ("credential", r"(?i:redentials?)", ("credential",)),
    # A qualified key only (api_key, SecretAccessKey): the letter before "key"
    # must end a qualifier or be a separator, which spares yaml's `key: value`.
    ("key", r"(?<=[isthengrpdkyISTHENGRPDKY_.-].)(?i:ey)", ("key",)),
    ("authorization", r"(?i:uthorization)", ("authorization",)),
)
# = := => or : after an optional closing quote or bracket (json, headers["x"] = ...)
_SEP = r"\\?[\"']?\]?[ \t]{0,8}+(?::=|=>|=(?!=)|:(?![:/]))[ \t]{0,8}+"


class _Alternative(NamedTuple):
    first: str  # a literal first character
    rest: str
    triggers: tuple[str, ...]


def _alternatives() -> tuple[list[_Alternative], dict[str, tuple[str, int]]]:
    """Every alternative of the main pattern, and (kind, check) by group name."""
    alts: list[_Alternative] = []
    meta: dict[str, tuple[str, int]] = {}
    for i, (kind, pat, check, triggers) in enumerate(_TOKENS):
        rest = pat[1:].replace("(?P<s>", f"(?P<s{i}>") + f"(?P<t{i}>)"
        alts.append(_Alternative(pat[0], rest, triggers))
        meta[f"t{i}"] = (kind, check)
    for i, (kind, rest, triggers) in enumerate(_KEYWORDS):
        for j, lead in enumerate((kind[0], kind[0].upper())):
            name = f"k{i}{j}"
            alts.append(_Alternative(lead, f"{rest}(?P<p{name}>{_SEP})(?P<{name}>)", triggers))
            meta[name] = (kind, 0)
    # An XML/HTML element whose tag name is secret-looking: <password>...</
    alts.append(_Alternative("<", r"(?P<xname>[A-Za-z_][\w.:-]{0,63}+)>(?P<x>)", ("<",)))
    meta["x"] = ("xml", 0)
    # A command-line flag and its value after a space: --token abc, -api-key abc.
    # (With "=" the keyword alternatives above see it.) The dash must start a
    # word, so that hyphenated prose ("well-known token") is not a flag.
    flag = r"(?<![^\s\"'=(]-)-?(?P<fname>[A-Za-z][\w.-]{0,40}+)[ \t]{1,4}+(?![\s-])(?P<f>)"
    alts.append(_Alternative("-", flag, ("pass", "pwd", "secret", "token", "credential", "key")))
    meta["f"] = ("flag", 0)
    return alts, meta


_ALTS, _META = _alternatives()
_TOKEN_BITS = (1 << len(_TOKENS)) - 1  # the token alternatives come first


@functools.lru_cache(maxsize=256)
def _pattern_for(mask: int) -> re.Pattern[str]:
    """The main pattern restricted to the alternatives whose bit is set in ``mask``.

    Most texts contain the triggers of few alternatives (often none), and a
    smaller pattern scans faster. The alternatives are grouped by their first
    character (keeping their order, which decides between ``sk-ant-`` and
    ``sk-``), so that the engine tests a position against one literal per
    group; the whole pattern then starts with a set of literals that the
    engine skips to in C.
    """
    groups: dict[str, list[str]] = {}
    for i, alt in enumerate(_ALTS):
        if mask >> i & 1:
            groups.setdefault(alt.first, []).append(alt.rest)
    return re.compile("|".join(f"{re.escape(c)}(?:{'|'.join(r)})" for c, r in groups.items()))


def _triggers() -> tuple[tuple[str, bool, int], ...]:
    """(trigger, compared case-sensitively, bits of the alternatives it enables)."""
    bits: dict[str, int] = {}
    for i, alt in enumerate(_ALTS):
        for trigger in alt.triggers:
            bits[trigger] = bits.get(trigger, 0) | 1 << i
    return tuple((t, t != t.lower(), b) for t, b in bits.items())


_TRIGGERS = _triggers()


def _mask_of(text: str, low: str) -> int:
    """Which alternatives can match ``text`` (``low`` is it lowered): the bits of its triggers."""
    mask = 0
    for trigger, case_sensitive, bits in _TRIGGERS:
        if trigger in (text if case_sensitive else low):
            mask |= bits
    return mask


_BLOCK_START = _Lazy(
    r"<(?i:\s{0,8}+private(?:\s[^<>\[\]]{0,200}+)?>)"
    r"|-(?:-{2,4}+ ?BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)? ?-{3,5}+)"
    r"|\[(?:REDACTED:[a-z0-9_]{1,40}+\])"
)
_PRIVATE_TAG = _Lazy(r"<\s{0,8}+(?P<close>/\s{0,8}+)?(?i:private)(?:\s[^<>\[\]]{0,200}+)?>")
_PEM_END = _Lazy(r"-{3,5}+ ?END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)? ?-{3,5}+")

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_NAME_MAX = 64
_HEAD = 128  # a value is judged on its first _HEAD characters

_UNQUOTED = _Lazy(r"[^\s\"'`&,]*+(?:&(?![\w.\[\]-]{1,64}+=)[^\s\"'`&,]*+)*+")
_QUOTED = {
    '"': _Lazy(r'[^"\\\n]*+(?:\\.[^"\\\n]*+)*+'),
    "'": _Lazy(r"[^'\\\n]*+(?:\\.[^'\\\n]*+)*+"),
    "`": _Lazy(r"[^`\\]*+(?:\\.[^`\\]*+)*+"),
    '\\"': _Lazy(r'[^"\\\n]*+(?:\\[^"\n][^"\\\n]*+)*+'),
}
_XML_VALUE = _Lazy(r"[^<\n]*+")
_AUTH_SCHEME = _Lazy(
    r"(?i:bearer|basic|token|bot|apikey|api-key|key|digest|negotiate|ntlm|hmac|"
    r"signature|sso-key|aws4-hmac-sha256)[ \t]{1,8}+"
)
_STRING_PREFIXES = frozenset("fFbBrRuU")
_STRING_OPENER = _Lazy(r"[fFbBrRuU]{0,2}(?:\\\"|[\"'`])")
_AUTH_LINE = _Lazy(r"[^\n]*+")

_KEY_QUALIFIER = _Lazy(
    r"(?:api|access|secret|private|client|auth|encryption|signing|master|account|app|"
    r"consumer|service|subscription|license|admin|session|shared|storage|webhook|deploy|"
    r"ingest|write|sas)[_.-]?$"
)
_NAME_KEYWORD = _Lazy(
    r"(?i:password|passwd|passphrase|secret|token|credentials?|authorization|cookie|pass|pwd|key)$"
)
_KIND_OF_KEYWORD = {
    "passwd": "password",
    "passphrase": "password",
    "pass": "password",
    "pwd": "password",
    "credentials": "credential",
}

_NULLISH = frozenset(
    "null none nil true false undefined yes no on off ~ required optional n/a na tbd todo "
    "redacted hidden masked".split()
)
_TYPE_WORDS = frozenset(
    "str string bytes int integer number bool boolean any object optional secretstr "
    "secretbytes none text char varchar password token dict list map".split()
)
_MASK_CHARS = frozenset("*xX.•…#?_-|>")
_PLACEHOLDER = _Lazy(
    r"\$\{|\$\(|\$[A-Za-z_]\w*$|\{\{|\{%|<[^<>]*>?$|%\(|%s$|\{[\w.]*\}$"
    r"|(?i:your)[\w-]*$|[\w-]*(?i:_here|-here)$"
)
_CODE = _Lazy(r"[A-Za-z_$][A-Za-z_$]*(?:\(|\.[A-Za-z_$]|\[|::|->)")
_IDENT = _Lazy(r"[A-Za-z_][A-Za-z_]*")
_CAMEL = _Lazy(r"[a-z]+[A-Z]")
_WORDS_AFTER = _Lazy(r"[ \t]+[A-Za-z]+[ \t,]+[A-Za-z]+")
_UPPER_NAME = _Lazy(r"[A-Z][A-Z0-9_]*")
_SPACED_EQUALS = _Lazy(r"[ \t]=|=[ \t]")


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


def is_secret_name(name: str) -> bool:
    """Whether a key or variable name is secret-looking (see the module rules)."""
    m = _NAME_KEYWORD.search(name)
    return m is not None and _name_ok(name, m.group().lower())


def _kind_of_name(name: str) -> str:
    m = _NAME_KEYWORD.search(name)
    keyword = m.group().lower() if m else "secret"
    return _KIND_OF_KEYWORD.get(keyword, keyword)


# ---------------------------------------------------------------------------
# Scanning


def _scan(text: str, mask: int | None = None) -> list[Finding]:
    """Findings in ``text``, sorted and disjoint; ``mask`` may be precomputed (a superset)."""
    low = text.lower()
    if mask is None:
        mask = _mask_of(text, low)
    found: list[Finding] = []
    blocks = _blocks(text) if "private" in low or _MARKER_PREFIX in text else []
    if not mask and not blocks:
        return found
    pos = 0
    for start, end, kind in blocks:
        if start > pos and mask:
            _scan_segment(text, pos, start, mask, found)
        if kind:
            found.append(Finding(kind, start, end))
        pos = end
    if pos < len(text) and mask:
        _scan_segment(text, pos, len(text), mask, found)
    return found


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


def _scan_segment(text: str, pos: int, end: int, mask: int, found: list[Finding]) -> None:
    search = _pattern_for(mask).search
    while pos < end and (m := search(text, pos, end)) is not None:
        group = m.lastgroup
        assert group is not None
        if group[0] == "t":
            pos = _on_token(m, group, found)
        elif group == "x":
            pos = _on_xml(text, m, end, found)
        elif group == "f":
            pos = _on_flag(text, m, end, found)
        elif _META[group][0] == "authorization":
            pos = _on_authorization(text, m, group, end, found)
        else:
            pos = _on_assignment(text, m, group, end, found)


def _on_token(m: re.Match[str], group: str, found: list[Finding]) -> int:
    kind, check = _META[group]
    s_group = "s" + group[1:]
    start, end = m.span(s_group) if m.re.groupindex.get(s_group) else m.span()
    if start < 0:
        start, end = m.span()
    secret = m.string[start:end]
    if check == _JWT:
        secret = secret.rstrip(".")
        end = start + len(secret)
        parts = secret.split(".")
        if len(parts) < 3 or not parts[1] or len(parts[0]) + len(parts[1]) < 20:
            return m.end()
    elif (check == _RANDOM and not _random_enough(secret)) or (
        kind == "url_password" and _is_reference(secret)
    ):
        return m.end()
    if kind == "url_password":
        kind = _refine(m.string, start, end, kind)
    found.append(Finding(kind, start, end))
    return m.end()


def _on_assignment(text: str, m: re.Match[str], group: str, end: int, found: list[Finding]) -> int:
    kind, _ = _META[group]
    kw_start = m.start()
    sep_start = m.start("p" + group)
    name_start = _name_start(text, kw_start)
    name = text[name_start:sep_start]
    keyword = text[kw_start:sep_start].lower()
    sep = text[sep_start : m.end()]
    if not _name_ok(name, keyword):
        return m.end()
    span = _value_span(text, m.end(), end, name, sep, name_start)
    if span is None:
        return m.end()
    vstart, vend, resume = span
    found.append(Finding(_refine(text, vstart, vend, kind), vstart, vend))
    return resume


def _on_authorization(
    text: str, m: re.Match[str], group: str, end: int, found: list[Finding]
) -> int:
    """`Authorization: Bearer x`: keep the scheme word, remove the credentials."""
    sep = text[m.start("p" + group) : m.end()]
    if not any(c in sep for c in ":="):
        return m.end()
    pos = m.end()
    quote = _STRING_OPENER.match(text, pos, end)
    scheme = _AUTH_SCHEME.match(text, quote.end() if quote else pos, end)
    if quote is None and scheme is None:
        # A bare value: judged like any other unquoted assignment value.
        name_start = _name_start(text, m.start())
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
            before = text[_name_start(text, m.start()) - 1 : _name_start(text, m.start())]
            closing = before if before in ('"', "'") else ""
        value_re = _QUOTED[closing] if closing else _AUTH_LINE
        v = value_re.match(text, vstart, end)
        assert v is not None
        value = v.group().rstrip(" \t\r\\,;")
        if not value or _is_reference(value.split()[0]):
            return m.end()
        vend = resume = vstart + len(value)
    found.append(Finding(_refine(text, vstart, vend, "authorization"), vstart, vend))
    return resume


def _on_flag(text: str, m: re.Match[str], end: int, found: list[Finding]) -> int:
    name = m.group("fname")
    kind = _key_kind(name)
    if not kind:
        return m.end()
    name_start = m.start("fname")
    span = _value_span(text, m.end(), end, name, " ", name_start)
    if span is None:
        return m.end()
    vstart, vend, resume = span
    found.append(Finding(_refine(text, vstart, vend, kind), vstart, vend))
    return resume


def _on_xml(text: str, m: re.Match[str], end: int, found: list[Finding]) -> int:
    name = m.group("xname")
    if not is_secret_name(name):
        return m.end()
    v = _XML_VALUE.match(text, m.end(), end)
    assert v is not None
    value = v.group().strip()
    if not value or _is_reference(value):
        return m.end()
    vstart = text.index(value, m.end())
    vend = vstart + len(value)
    kind = _kind_of_name(name)
    found.append(Finding(_refine(text, vstart, vend, kind), vstart, vend))
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
    if not value or _is_reference(value):
        return None
    if not _env_form(name, sep, text, name_start):
        before = text[max(0, name_start - 2) : name_start].rstrip()[-1:]
        after = text[pos + len(value) : pos + len(value) + 1]
        if _code_like(value, sep, before, after, name):
            return None
        if ":" in sep and _looks_like_prose(text, pos, value, sep):
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
    if not value or _is_reference(value) or value.lower() in _TYPE_WORDS:
        return None
    if head.end() - start == _HEAD:
        full = pattern.match(text, start, end)
        assert full is not None
        value = full.group()
    vend = start + len(value)
    resume = vend + len(opener) if text.startswith(opener, vend) else vend
    return start, vend, resume


# ---------------------------------------------------------------------------
# Judgement: names, values, randomness


def _name_start(text: str, kw_start: int) -> int:
    i = kw_start
    stop = max(0, kw_start - _NAME_MAX)
    while i > stop and text[i - 1] in _NAME_CHARS:
        i -= 1
    return i


def _name_ok(name: str, keyword: str) -> bool:
    prefix = name[: len(name) - len(keyword)]
    bare = prefix.lstrip("-")
    if keyword in ("pass", "pwd"):
        if name.lstrip("-").lower() in ("pwd", "oldpwd"):
            return False  # the shell's working directory
        if bare and not (
            prefix[-1] in "_.-"
            or ((prefix[-1].islower() or prefix[-1].isdigit()) and name[len(prefix)].isupper())
        ):
            return False  # bypass, compass, PASSPORT...
    elif keyword == "key":
        return _KEY_QUALIFIER.search(prefix.lower()) is not None
    return True


def _is_reference(value: str) -> bool:
    """Whether a value stands for a secret rather than being one."""
    if value.startswith(_MARKER_PREFIX):
        return True
    low = value.lower()
    if low in _NULLISH or set(value) <= _MASK_CHARS:
        return True
    return _PLACEHOLDER.match(value) is not None


def _env_form(name: str, sep: str, text: str, name_start: int) -> bool:
    """NAME=value with no spaces and an upper-case name, or `export name=`: a literal."""
    if sep != "=":
        return False
    if _UPPER_NAME.fullmatch(name):
        return True
    return text[max(0, name_start - 16) : name_start].rstrip(" \t").endswith("export")


def _code_like(value: str, sep: str, before: str, after: str, name: str = "") -> bool:
    """Whether an unquoted value is an expression rather than a literal.

    ``before`` is the character before the name, ``after`` the one after the value.
    """
    if _CODE.match(value):
        return True  # get_token(), self.token, os.environ[...], process.env.X
    low = value.lower()
    if low in _TYPE_WORDS and ":" in sep:
        return True  # password: str
    if name and low == name.lower().lstrip("-"):
        return True  # api_key=api_key
    if not _IDENT.fullmatch(value):
        return False
    if _CAMEL.match(value):
        return True  # password: hashedPassword
    if after and after in ")]},;|[":
        return True  # f(password=pw), {"Authorization": auth}
    if _SPACED_EQUALS.search(sep):
        return True  # token = tok
    return before in ("(", ",")  # f(a, password=pw)


def _looks_like_prose(text: str, pos: int, value: str, sep: str) -> bool:
    """`forgot your password: click here to reset` is prose, not a secret."""
    if ":" not in sep or not value.isalpha() or not value.islower():
        return False
    return _WORDS_AFTER.match(text, pos + len(value), pos + len(value) + 80) is not None


def _random_enough(s: str) -> bool:
    """Whether a token body looks generated rather than like an identifier or a word."""
    if len(set(s)) < 10:
        return False
    upper = sum(c.isupper() for c in s)
    lower = sum(c.islower() for c in s)
    digits = sum(c.isdigit() for c in s)
    if upper and lower and digits:
        return True
    if digits and lower and not upper and all(c in "0123456789abcdef" for c in s):
        return len(s) >= 16  # hex
    letters = upper + lower
    return len(s) >= 20 and letters > 0 and 0.25 <= upper / letters <= 0.75


def _refine(text: str, start: int, end: int, kind: str) -> str:
    """The kind of a value that is itself a recognised token, else ``kind``."""
    value = text[start:end]
    mask = _mask_of(value, value.lower()) & _TOKEN_BITS
    if not mask:
        return kind
    m = _pattern_for(mask).fullmatch(value)
    if m is not None and m.lastgroup and m.lastgroup[0] == "t":
        return _META[m.lastgroup][0]
    return kind


# ---------------------------------------------------------------------------
# JSON-like structures


def _walk(root: Any, findings: list[Finding] | None) -> Any:
    """Redact a JSON-like value without recursion (payload depth is not ours to bound)."""
    if not isinstance(root, (dict, list, tuple)):
        return _leaf(root, "", "", None, findings)
    # One trigger check for the whole payload instead of one per string: most
    # payloads hold many short strings, and the check has a cost per call.
    joined = "\n".join(_strings(root))
    mask = _mask_of(joined, joined.lower())
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
                    child_secret = _key_kind(key)
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


@functools.lru_cache(maxsize=1024)
def _key_kind(key: str) -> str:
    """The kind of secret a key's value is, or "" (keys repeat: cached)."""
    return _kind_of_name(key) if is_secret_name(key) else ""


def _leaf(
    value: Any, secret: str, path: str, mask: int | None, findings: list[Finding] | None
) -> Any:
    """A scalar; ``secret`` is the kind when it sits under a secret-looking key."""
    if isinstance(value, str):
        if secret and value and not _is_reference(value):
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

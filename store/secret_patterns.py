"""What secrets look like as text: the token table and the main pattern built from it.

The rules are described in :mod:`reverie.store.redaction`. This module holds
the provider token patterns (with JWTs, ``Bearer`` tokens and URL passwords),
the keywords that end a secret-looking name, and the assembly of both into
one pattern per set of alternatives a text can match: :func:`mask_of` picks
the alternatives from cheap substring triggers, :func:`pattern_for` compiles
them (cached).

Every alternative of the main pattern starts with a literal character so that
the regex engine skips non-candidates in C; a word boundary, where wanted, is
the lookbehind ``(?<!\\w.)`` placed after that first character. Runs are
possessive (``{n,}+``): once a token's prefix matched, the run is consumed
whether or not it validates, so no position is scanned twice.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterator


class Lazy:
    """A regex compiled on first use.

    The Claude Code hook imports the redaction modules in a fresh process each
    time, and most payloads need few of these patterns: compiling them all at
    import would cost milliseconds for nothing.
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


RANDOM = 1  # validate that the token body looks random
JWT = 2  # validate JWT structure

# (kind, pattern, check, triggers): a pattern can only match a text that
# contains one of its triggers (compared case-sensitively if the trigger has a
# capital, else with the text lowered); see pattern_for.
_TOKENS: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    ("anthropic_key", r"s(?<!\w.)k-ant-[A-Za-z0-9_-]{20,}+", RANDOM, ("sk-",)),
    ("openai_key", r"s(?<!\w.)k-[A-Za-z0-9_-]{20,}+", RANDOM, ("sk-",)),
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
    ("huggingface_token", r"h(?<!\w.)f_[A-Za-z0-9]{30,}+", RANDOM, ("hf_",)),
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
    ("replicate_token", r"r(?<!\w.)8_[A-Za-z0-9]{30,}+", RANDOM, ("r8_",)),
    ("perplexity_key", r"p(?<!\w.)plx-[A-Za-z0-9]{40,}+", 0, ("pplx-",)),
    ("mailgun_key", r"k(?<!\w.)ey-[0-9a-f]{32}(?![0-9A-Za-z])", 0, ("key",)),
    ("jwt", r"e(?<!\w.)yJ[A-Za-z0-9_-]{8,}+(?:\.[A-Za-z0-9_-]*+){0,4}", JWT, ("eyJ",)),
    (
        "bearer_token",
        r"B(?<!\w.)earer[ \t]{1,8}+(?P<s>[A-Za-z0-9._~+/=-]{16,}+)",
        RANDOM,
        ("bearer",),
    ),
    (
        "bearer_token",
        r"b(?<!\w.)earer[ \t]{1,8}+(?P<s>[A-Za-z0-9._~+/=-]{16,}+)",
        RANDOM,
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


# (a literal first character, the rest, triggers). A plain tuple, not a
# NamedTuple: defining a class costs ~0.1 ms of the hook's import time.
_Alternative = tuple[str, str, tuple[str, ...]]


def _alternatives() -> tuple[list[_Alternative], dict[str, tuple[str, int]]]:
    """Every alternative of the main pattern, and (kind, check) by group name."""
    alts: list[_Alternative] = []
    meta: dict[str, tuple[str, int]] = {}
    for i, (kind, pat, check, triggers) in enumerate(_TOKENS):
        rest = pat[1:].replace("(?P<s>", f"(?P<s{i}>") + f"(?P<t{i}>)"
        alts.append((pat[0], rest, triggers))
        meta[f"t{i}"] = (kind, check)
    for i, (kind, rest, triggers) in enumerate(_KEYWORDS):
        for j, lead in enumerate((kind[0], kind[0].upper())):
            name = f"k{i}{j}"
            alts.append((lead, f"{rest}(?P<p{name}>{_SEP})(?P<{name}>)", triggers))
            meta[name] = (kind, 0)
    # An XML/HTML element whose tag name is secret-looking: <password>...</
    alts.append(("<", r"(?P<xname>[A-Za-z_][\w.:-]{0,63}+)>(?P<x>)", ("<",)))
    meta["x"] = ("xml", 0)
    # A command-line flag and its value after a space: --token abc, -api-key abc.
    # (With "=" the keyword alternatives above see it.) The dash must start a
    # word, so that hyphenated prose ("well-known token") is not a flag.
    flag = r"(?<![^\s\"'=(]-)-?(?P<fname>[A-Za-z][\w.-]{0,40}+)[ \t]{1,4}+(?![\s-])(?P<f>)"
    alts.append(("-", flag, ("pass", "pwd", "secret", "token", "credential", "key")))
    meta["f"] = ("flag", 0)
    return alts, meta


_ALTS, META = _alternatives()
TOKEN_BITS = (1 << len(_TOKENS)) - 1  # the token alternatives come first


@functools.lru_cache(maxsize=256)
def pattern_for(mask: int) -> re.Pattern[str]:
    """The main pattern restricted to the alternatives whose bit is set in ``mask``.

    Most texts contain the triggers of few alternatives (often none), and a
    smaller pattern scans faster. The alternatives are grouped by their first
    character (keeping their order, which decides between ``sk-ant-`` and
    ``sk-``), so that the engine tests a position against one literal per
    group; the whole pattern then starts with a set of literals that the
    engine skips to in C.
    """
    groups: dict[str, list[str]] = {}
    for i, (first, rest, _) in enumerate(_ALTS):
        if mask >> i & 1:
            groups.setdefault(first, []).append(rest)
    return re.compile("|".join(f"{re.escape(c)}(?:{'|'.join(r)})" for c, r in groups.items()))


def _triggers() -> tuple[tuple[str, bool, int], ...]:
    """(trigger, compared case-sensitively, bits of the alternatives it enables)."""
    bits: dict[str, int] = {}
    for i, (_, _, triggers) in enumerate(_ALTS):
        for trigger in triggers:
            bits[trigger] = bits.get(trigger, 0) | 1 << i
    return tuple((t, t != t.lower(), b) for t, b in bits.items())


_TRIGGERS = _triggers()


def mask_of(text: str, low: str) -> int:
    """Which alternatives can match ``text`` (``low`` is it lowered): the bits of its triggers."""
    mask = 0
    for trigger, case_sensitive, bits in _TRIGGERS:
        if trigger in (text if case_sensitive else low):
            mask |= bits
    return mask

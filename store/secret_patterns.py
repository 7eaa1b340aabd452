"""What secrets look like as text: the token table and the main pattern built from it.

The rules are described in :mod:`reverie.store.redaction`. This module holds
the provider token patterns (with JWTs, ``Bearer`` tokens and URL passwords),
the keywords that end a secret-looking name, and the assembly of both into
one pattern per set of alternatives a text can match: :func:`mask_of` picks
the alternatives from cheap substring triggers, :func:`pattern_for` compiles
them (cached).

A mask only leaves out alternatives that cannot match the text, so that the
restricted pattern finds exactly what the whole one would (tests check it);
which makes the result of a text independent of anything but that text. It
is also what most of redaction's time goes to: each trigger is a substring
search over the whole text, so there are few of them (most tokens are looked
for only in the long runs of letters and digits that a token is), and names
are only looked at near a separator.

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

# Where a token's triggers are looked for (see mask_of). RUN: every match is
# one run of at least RUN_MIN characters of [A-Za-z0-9_-] and holds its
# trigger, so only such runs need searching. TEXT: the whole text.
RUN = True
TEXT = False
RUN_MIN = 20

# (kind, pattern, check, triggers, where): a pattern can only match a text
# that contains one of its triggers (compared case-sensitively if the trigger
# has a capital, else with the text folded: see fold); see pattern_for.
_TOKENS: tuple[tuple[str, str, int, tuple[str, ...], bool], ...] = (
    ("anthropic_key", r"s(?<!\w.)k-ant-[A-Za-z0-9_-]{20,}+", RANDOM, ("sk-",), RUN),
    ("openai_key", r"s(?<!\w.)k-[A-Za-z0-9_-]{20,}+", RANDOM, ("sk-",), RUN),
    ("stripe_key", r"s(?<!\w.)k_(?:live|test)_[A-Za-z0-9]{16,}+", 0, ("sk_",), RUN),
    ("stripe_key", r"r(?<!\w.)k_(?:live|test)_[A-Za-z0-9]{16,}+", 0, ("rk_",), RUN),
    ("stripe_webhook_secret", r"w(?<!\w.)hsec_[A-Za-z0-9+/=]{24,}+", 0, ("whsec_",), TEXT),
    (
        "github_token",
        r"g(?<!\w.)h[pousr]_[A-Za-z0-9]{30,}+",
        0,
        ("gh",),
        RUN,
    ),
    ("github_token", r"g(?<!\w.)ithub_pat_[A-Za-z0-9_]{40,}+", 0, ("github_pat",), RUN),
    (
        "gitlab_token",
        r"g(?<!\w.)l(?:pat|dt|rt|ptt|cbt|ft|imt|oas|soat|agent)-[A-Za-z0-9_-]{20,}+",
        0,
        ("gl",),
        RUN,
    ),
    ("slack_token", r"x(?<!\w.)ox[abposrce]-[A-Za-z0-9-]{10,}+", 0, ("xox",), TEXT),
    ("slack_token", r"x(?<!\w.)app-\d-[A-Za-z0-9-]{10,}+", 0, ("xapp-",), TEXT),
    (
        "slack_webhook",
        r"h(?<!\w.)ooks\.slack\.com/(?:services|workflows|triggers)/(?P<s>[A-Za-z0-9/_-]{20,}+)",
        0,
        ("hooks.slack",),
        TEXT,
    ),
    (
        "aws_access_key_id",
        r"A(?<!\w.)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        0,
        ("akia", "asia", "abia", "acca"),
        RUN,
    ),
    ("google_api_key", r"A(?<!\w.)Iza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", 0, ("aiza",), RUN),
    (
        "age_secret_key",
        r"A(?<!\w.)GE-SECRET-KEY-1[0-9A-Z]{58}(?![A-Za-z0-9])",
        0,
        ("secret",),
        RUN,
    ),
    ("google_oauth_secret", r"G(?<!\w.)OCSPX-[A-Za-z0-9_-]{20,}+", 0, ("gocspx",), RUN),
    ("google_oauth_token", r"y(?<!\w.)a29\.[0-9A-Za-z_-]{20,}+", 0, ("ya29.",), TEXT),
    ("huggingface_token", r"h(?<!\w.)f_[A-Za-z0-9]{30,}+", RANDOM, ("hf_",), RUN),
    ("npm_token", r"n(?<!\w.)pm_[A-Za-z0-9]{36,}+", 0, ("npm_",), RUN),
    ("pypi_token", r"p(?<!\w.)ypi-[A-Za-z0-9_-]{50,}+", 0, ("pypi-",), RUN),
    ("twilio_key", r"S(?<!\w.)K[0-9a-fA-F]{32}(?![0-9A-Za-z])", 0, ("SK",), RUN),
    ("sendgrid_key", r"S(?<!\w.)G\.[A-Za-z0-9_-]{16,}+\.[A-Za-z0-9_-]{16,}+", 0, ("SG.",), TEXT),
    (
        "digitalocean_token",
        r"d(?<!\w.)o[opr]_v1_[a-f0-9]{64}(?![A-Za-z0-9])",
        0,
        ("_v1_",),
        RUN,
    ),
    (
        "shopify_token",
        r"s(?<!\w.)hp(?:at|ss|ca|pa)_[a-fA-F0-9]{32,}+(?![A-Za-z0-9])",
        0,
        ("shp",),
        RUN,
    ),
    ("databricks_token", r"d(?<!\w.)api[a-f0-9]{32}(?:-\d)?(?![A-Za-z0-9])", 0, ("dapi",), RUN),
    ("linear_key", r"l(?<!\w.)in_api_[A-Za-z0-9]{40,}+", 0, ("lin_api",), RUN),
    ("groq_key", r"g(?<!\w.)sk_[A-Za-z0-9]{48,}+", 0, ("sk_",), RUN),
    ("xai_key", r"x(?<!\w.)ai-[A-Za-z0-9]{60,}+", 0, ("xai-",), RUN),
    ("replicate_token", r"r(?<!\w.)8_[A-Za-z0-9]{30,}+", RANDOM, ("r8_",), RUN),
    ("perplexity_key", r"p(?<!\w.)plx-[A-Za-z0-9]{40,}+", 0, ("pplx-",), RUN),
    ("mailgun_key", r"k(?<!\w.)ey-[0-9a-f]{32}(?![0-9A-Za-z])", 0, ("key",), RUN),
    ("jwt", r"e(?<!\w.)yJ[A-Za-z0-9_-]{8,}+(?:\.[A-Za-z0-9_-]*+){0,4}", JWT, ("eyJ",), TEXT),
    (
        "bearer_token",
        r"B(?<!\w.)earer[ \t]{1,8}+(?P<s>[A-Za-z0-9._~+/=-]{16,}+)",
        RANDOM,
        ("bearer",),
        TEXT,
    ),
    (
        "bearer_token",
        r"b(?<!\w.)earer[ \t]{1,8}+(?P<s>[A-Za-z0-9._~+/=-]{16,}+)",
        RANDOM,
        ("bearer",),
        TEXT,
    ),
    # The user part and the password cannot contain "/", so a scan never runs
    # past the next "://" and the backtracking to the last "@" is bounded.
    (
        "url_password",
        r"://[^\s:/?#@\"'<>\[\]]{0,200}+:(?P<s>[^\s/?#\"'<>]{1,500})@",
        0,
        ("://",),
        TEXT,
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


# What a secret-looking name ends with (secret_rules._NAME_KEYWORD) always
# contains one of these: a flag (--token x) or an XML element (<password>)
# can only hold a secret in a text that contains one of them.
NAME_TRIGGERS = ("pass", "pwd", "secret", "token", "credential", "authorization", "cookie", "key")

# How the triggers of an alternative are looked for (see mask_of).
_IN_RUNS, _IN_TEXT, _BEFORE_SEP, _FLAG, _XML = range(5)

# (a literal first character, the rest, triggers, how). A plain tuple, not a
# NamedTuple: defining a class costs ~0.1 ms of the hook's import time.
_Alternative = tuple[str, str, tuple[str, ...], int]


def _alternatives() -> tuple[list[_Alternative], dict[str, tuple[str, int]]]:
    """Every alternative of the main pattern, and (kind, check) by group name."""
    alts: list[_Alternative] = []
    meta: dict[str, tuple[str, int]] = {}
    for i, (kind, pat, check, triggers, in_run) in enumerate(_TOKENS):
        rest = pat[1:].replace("(?P<s>", f"(?P<s{i}>") + f"(?P<t{i}>)"
        alts.append((pat[0], rest, triggers, _IN_RUNS if in_run else _IN_TEXT))
        meta[f"t{i}"] = (kind, check)
    for i, (kind, rest, triggers) in enumerate(_KEYWORDS):
        for j, lead in enumerate((kind[0], kind[0].upper())):
            name = f"k{i}{j}"
            alts.append((lead, f"{rest}(?P<p{name}>{_SEP})(?P<{name}>)", triggers, _BEFORE_SEP))
            meta[name] = (kind, 0)
    # An XML/HTML element whose tag name is secret-looking: <password>...</
    alts.append(("<", r"(?P<xname>[A-Za-z_][\w.:-]{0,63}+)>(?P<x>)", NAME_TRIGGERS, _XML))
    meta["x"] = ("xml", 0)
    # A command-line flag and its value after a space: --token abc, -api-key abc.
    # (With "=" the keyword alternatives above see it.) The dash must start a
    # word, so that hyphenated prose ("well-known token") is not a flag.
    flag = r"(?<![^\s\"'=(]-)-?(?P<fname>[A-Za-z][\w.-]{0,40}+)[ \t]{1,4}+(?![\s-])(?P<f>)"
    alts.append(("-", flag, NAME_TRIGGERS, _FLAG))
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
    for i, (first, rest, _, _) in enumerate(_ALTS):
        if mask >> i & 1:
            groups.setdefault(first, []).append(rest)
    return re.compile("|".join(f"{re.escape(c)}(?:{'|'.join(r)})" for c, r in groups.items()))


# Characters that the regex engine's case-insensitive matching takes for an
# ASCII letter of a keyword (a password spelled with U+017F for its s's), but
# str.lower() does not lower to one: the long s, the dotless i, and the
# combining dot that U+0130 (I with a dot) lowers to beside its "i" (dropping
# it elsewhere only adds trigger matches).
_FOLD = {0x17F: "s", 0x131: "i", 0x307: None}


def fold(text: str) -> str:
    """``text`` lowered for trigger tests: every way (?i) can spell a keyword becomes ASCII."""
    low = text.lower()
    if low.isascii() or not ("\u017f" in low or "\u0131" in low or "\u0307" in low):
        return low
    return low.translate(_FOLD)


_FLAG_BIT = 1 << len(_ALTS) - 1
_XML_BIT = 1 << len(_ALTS) - 2
_URL_BIT = next(1 << i for i, t in enumerate(_TOKENS) if t[0] == "url_password")
# The runs of [A-Za-z0-9_-] as bytes: those characters become "a", others " ".
_table = bytearray(b" " * 256)
for _first, _last in ((b"0", b"9"), (b"A", b"Z"), (b"a", b"z"), (b"_", b"_"), (b"-", b"-")):
    _table[_first[0] : _last[0] + 1] = b"a" * (_last[0] - _first[0] + 1)
_RUN_TABLE = bytes(_table)
_RUN_NEEDLE = b"a" * RUN_MIN


def _triggers() -> tuple[
    tuple[tuple[str, bool, int], ...],
    tuple[tuple[str, bool, int], ...],
    tuple[tuple[str, int], ...],
]:
    """The trigger tables of mask_of.

    (trigger, compared case-sensitively, bits) for the whole text and for
    the runs; (trigger, bits) for the name triggers: the bits of the keyword
    alternatives it enables.
    """
    text: dict[str, int] = {}
    runs: dict[str, int] = {}
    named = dict.fromkeys(NAME_TRIGGERS, 0)
    for i, (_, _, triggers, how) in enumerate(_ALTS):
        for trigger in triggers:
            if how == _IN_TEXT:
                text[trigger] = text.get(trigger, 0) | 1 << i
            elif how == _IN_RUNS:
                runs[trigger] = runs.get(trigger, 0) | 1 << i
            elif how == _BEFORE_SEP:
                named[trigger] |= 1 << i  # every keyword trigger is a name trigger
    return (
        tuple((t, t != t.lower(), b) for t, b in text.items()),
        tuple((t, t != t.lower(), b) for t, b in runs.items()),
        tuple(named.items()),
    )


_TEXT_TRIGGERS, _RUN_TRIGGERS, _NAME_BITS = _triggers()


def mask_of(text: str, low: str) -> int:
    """Which alternatives can match ``text`` (``low`` is ``fold(text)``).

    An alternative is left out only when ``text`` lacks something every match
    of it holds: one of its triggers; for a token whose matches are runs of
    [A-Za-z0-9_-], one of its triggers inside such a run; for a password in a
    URL, also an ``@``; for the name alternatives, see _name_mask. Each test
    is a substring search in C; the triggers of most tokens are looked for
    only in runs of RUN_MIN or more such characters, which ordinary text has
    few of, and the name triggers only when a separator is there.
    """
    mask = 0
    for trigger, case_sensitive, bits in _TEXT_TRIGGERS:
        if trigger in (text if case_sensitive else low):
            mask |= bits
    if mask & _URL_BIT and "@" not in text:
        mask ^= _URL_BIT
    sep = "=" in text or ":" in text
    dash = "-" in text
    angle = "<" in text and ">" in text
    if sep or dash or angle:
        mask |= _name_mask(low, sep, dash, angle)
    if len(text) >= RUN_MIN:
        mask |= _run_mask(text)
    return mask


def _name_mask(low: str, sep: bool, dash: bool, angle: bool) -> int:
    """The name alternatives that can match: around some place of a name trigger,

    * an assignment (``api_key = ...``): a ``:`` or ``=`` within 21 characters
      after the keyword (the longest keyword has 13, the separator's ``:`` or
      ``=`` comes after at most 11 quotes, brackets and blanks);
    * a flag (``--api-key x``): a ``-`` within 43 characters before it (where
      the flag's name starts) and a blank within 13 after its start (the
      keyword ends the name, the blank follows);
    * an XML element (``<password>``): a ``<`` within 65 characters before it,
      a ``>`` within 13 after;

    all on its line: none of these matches holds a newline (so neither does a
    text joined from several with newlines). Every name trigger starts its
    keyword (pass: password, passwd, passphrase, pass); ``low`` keeps the
    lengths of keywords, names and separators (fold). ``sep``, ``dash`` and
    ``angle`` say whether the text has those characters.
    """
    mask = 0
    for trigger, bits in _NAME_BITS:
        # Each place costs a few slices (linear in the text); done when every
        # bit this trigger can give is given.
        wanted = (bits if sep else 0) | (_FLAG_BIT if dash else 0) | (_XML_BIT if angle else 0)
        place = low.find(trigger) if mask & wanted != wanted else -1
        while place >= 0 and mask & wanted != wanted:
            after = low[place + 3 : place + 25].partition("\n")[0]
            if sep and ("=" in after or ":" in after):
                mask |= bits
            if dash or angle:
                before = low[max(0, place - 65) : place].rpartition("\n")[2]
                if dash and "-" in before[-43:] and (" " in after[:11] or "\t" in after[:11]):
                    mask |= _FLAG_BIT
                if angle and ">" in after[:11] and "<" in before:
                    mask |= _XML_BIT
            place = low.find(trigger, place + 1)
    return mask


def _run_mask(text: str) -> int:
    """The bits of the tokens whose triggers are inside runs of RUN_MIN or more."""
    data = text.encode("utf-8", "surrogatepass")
    shape = data.translate(_RUN_TABLE)
    start = shape.find(_RUN_NEEDLE)
    if start < 0:
        return 0
    runs = []
    while start >= 0:  # the first RUN_MIN of a run: find() is leftmost
        end = shape.find(b" ", start)
        if end < 0:
            end = len(shape)
        runs.append(data[start:end])
        start = shape.find(_RUN_NEEDLE, end)
    joined = b" ".join(runs).decode()  # str: `in` on bytes costs 4x more per call
    low = joined.lower()
    mask = 0
    for trigger, case_sensitive, bits in _RUN_TRIGGERS:
        if trigger in (joined if case_sensitive else low):
            mask |= bits
    return mask

"""Judgement on names and values: is this name secret-looking, is this value a literal secret.

The rules are described in :mod:`reverie.store.redaction` ("What is removed",
"What is kept"); the scanner asks these functions once a pattern matched.
"""

from __future__ import annotations

import functools

from reverie.store.secret_patterns import META, TOKEN_BITS, Lazy, fold, mask_of, pattern_for

# Markers already in a text stand for a secret: never re-redacted (idempotence).
MARKER_PREFIX = "[REDACTED:"

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_NAME_MAX = 64

_KEY_QUALIFIER = Lazy(
    r"(?:api|access|secret|private|client|auth|encryption|signing|master|account|app|"
    r"consumer|service|subscription|license|admin|session|shared|storage|webhook|deploy|"
    r"ingest|write|sas)[_.-]?$"
)
_NAME_KEYWORD = Lazy(
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
TYPE_WORDS = frozenset(
    "str string bytes int integer number bool boolean any object optional secretstr "
    "secretbytes none text char varchar password token dict list map".split()
)
_MASK_CHARS = frozenset("*xX.•…#?_-|>")
_PLACEHOLDER = Lazy(
    r"\$\{|\$\(|\$[A-Za-z_]\w*$|\{\{|\{%|<[^<>]*>?$|%\(|%s$|\{[\w.]*\}$"
    r"|(?i:your)[\w-]*$|[\w-]*(?i:_here|-here)$"
)
_CODE = Lazy(r"[A-Za-z_$][A-Za-z_$]*(?:\(|\.[A-Za-z_$]|\[|::|->)")
_IDENT = Lazy(r"[A-Za-z_][A-Za-z_]*")
_CAMEL = Lazy(r"[a-z]+[A-Z]")
_WORDS_AFTER = Lazy(r"[ \t]+[A-Za-z]+[ \t,]+[A-Za-z]+")
_UPPER_NAME = Lazy(r"[A-Z][A-Z0-9_]*")
_SPACED_EQUALS = Lazy(r"[ \t]=|=[ \t]")


def is_secret_name(name: str) -> bool:
    """Whether a key or variable name is secret-looking (rules: :mod:`reverie.store.redaction`)."""
    m = _NAME_KEYWORD.search(name)
    return m is not None and name_ok(name, m.group().lower())


def kind_of_name(name: str) -> str:
    """The kind of secret a secret-looking name holds: its keyword, normalised."""
    m = _NAME_KEYWORD.search(name)
    keyword = m.group().lower() if m else "secret"
    return _KIND_OF_KEYWORD.get(keyword, keyword)


@functools.lru_cache(maxsize=1024)
def key_kind(key: str) -> str:
    """The kind of secret a key's value is, or "" (keys repeat: cached)."""
    return kind_of_name(key) if is_secret_name(key) else ""


def start_of_name(text: str, kw_start: int) -> int:
    """Where the name that ends with the keyword at ``kw_start`` begins (bounded look-back)."""
    i = kw_start
    stop = max(0, kw_start - _NAME_MAX)
    while i > stop and text[i - 1] in _NAME_CHARS:
        i -= 1
    return i


def name_ok(name: str, keyword: str) -> bool:
    """Whether ``name``, which ends with ``keyword``, is secret-looking by the rules."""
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


def is_reference(value: str) -> bool:
    """Whether a value stands for a secret rather than being one."""
    if value.startswith(MARKER_PREFIX):
        return True
    low = value.lower()
    if low in _NULLISH or set(value) <= _MASK_CHARS:
        return True
    return _PLACEHOLDER.match(value) is not None


def env_form(name: str, sep: str, text: str, name_start: int) -> bool:
    """NAME=value with no spaces and an upper-case name, or `export name=`: a literal."""
    if sep != "=":
        return False
    if _UPPER_NAME.fullmatch(name):
        return True
    return text[max(0, name_start - 16) : name_start].rstrip(" \t").endswith("export")


def code_like(value: str, sep: str, before: str, after: str, name: str = "") -> bool:
    """Whether an unquoted value is an expression rather than a literal.

    ``before`` is the character before the name, ``after`` the one after the value.
    """
    if _CODE.match(value):
        return True  # get_token(), self.token, os.environ[...], process.env.X
    low = value.lower()
    if low in TYPE_WORDS and ":" in sep:
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


def looks_like_prose(text: str, pos: int, value: str, sep: str) -> bool:
    """`forgot your password: click here to reset` is prose, not a secret."""
    if ":" not in sep or not value.isalpha() or not value.islower():
        return False
    return _WORDS_AFTER.match(text, pos + len(value), pos + len(value) + 80) is not None


def random_enough(s: str) -> bool:
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


def refine(text: str, start: int, end: int, kind: str) -> str:
    """The kind of a value that is itself a recognised token, else ``kind``."""
    value = text[start:end]
    mask = mask_of(value, fold(value)) & TOKEN_BITS
    if not mask:
        return kind
    m = pattern_for(mask).fullmatch(value)
    if m is not None and m.lastgroup and m.lastgroup[0] == "t":
        return META[m.lastgroup][0]
    return kind

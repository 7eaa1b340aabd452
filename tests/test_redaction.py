"""Secret redaction, both directions: every planted secret goes, every benign string stays.

The corpus (tests/data/secrets/corpus.jsonl) holds templates such as
``<<github_pat_classic>>``; the shapes are generated here from a seed per case,
so the repository never contains anything a secret scanner (GitHub push
protection and the like) would take for a live credential.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reverie.store.redaction import Finding, is_secret_name, redact, redact_with_report
from reverie.store.redaction_objects import redact_obj, redact_obj_with_report

CORPUS = Path(__file__).parent / "data" / "secrets" / "corpus.jsonl"
ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"
HEX = "0123456789abcdef"


# ---------------------------------------------------------------------------
# Shapes of fake secrets


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _mixed(rng: random.Random, alphabet: str, n: int) -> str:
    """Random, with at least one upper, one lower and one digit (as real keys have)."""
    body = [*_chars(rng, alphabet, n - 3)]
    body += [rng.choice(string.ascii_uppercase), rng.choice(string.ascii_lowercase)]
    body.append(rng.choice(string.digits))
    rng.shuffle(body)
    return "".join(body)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(rng: random.Random) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": _chars(rng, HEX, 12), "iat": 1700000000 + rng.randrange(10**6), "adm": False}
    return f"{header}.{_b64url(json.dumps(claims).encode())}.{_mixed(rng, B64URL, 43)}"


def _pem(label: str, lines: int = 6) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        body = [_mixed(rng, ALNUM + "+/", 64) for _ in range(lines)]
        return "\n".join([f"-----BEGIN {label}-----", *body, f"-----END {label}-----"])

    return make


def _password(rng: random.Random) -> str:
    return _mixed(rng, ALNUM + "!%^*_+-=", 14) + rng.choice(ALNUM)


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "openai_key": lambda r: "sk-" + _mixed(r, ALNUM, 48),
    "openai_proj_key": lambda r: (
        "sk-proj-" + _mixed(r, B64URL, 74) + "T3BlbkFJ" + _mixed(r, B64URL, 74)
    ),
    "openai_svcacct_key": lambda r: "sk-svcacct-" + _mixed(r, B64URL, 90),
    "anthropic_key": lambda r: "sk-ant-api03-" + _mixed(r, B64URL, 93) + "AA",
    "anthropic_admin_key": lambda r: "sk-ant-admin01-" + _mixed(r, B64URL, 93) + "AA",
    "github_pat_classic": lambda r: "ghp_" + _mixed(r, ALNUM, 36),
    "github_oauth": lambda r: "gho_" + _mixed(r, ALNUM, 36),
    "github_user_to_server": lambda r: "ghu_" + _mixed(r, ALNUM, 36),
    "github_server_to_server": lambda r: "ghs_" + _mixed(r, ALNUM, 36),
    "github_refresh": lambda r: "ghr_" + _mixed(r, ALNUM, 36),
    "github_fine_grained": lambda r: f"github_pat_{_mixed(r, ALNUM, 22)}_{_mixed(r, ALNUM, 59)}",
    "gitlab_pat": lambda r: "glpat-" + _mixed(r, B64URL, 20),
    "slack_bot": lambda r: (
        f"xoxb-{_chars(r, '0123456789', 12)}-{_chars(r, '0123456789', 13)}-" + _mixed(r, ALNUM, 24)
    ),
    "slack_user": lambda r: (
        f"xoxp-{_chars(r, '0123456789', 12)}-{_chars(r, '0123456789', 12)}-" + _mixed(r, ALNUM, 32)
    ),
    "slack_app": lambda r: (
        f"xapp-1-A{_chars(r, ALNUM.upper(), 10)}-{_chars(r, '0123456789', 13)}-"
        + _chars(r, HEX, 64)
    ),
    "slack_webhook": lambda r: (
        "https://hooks.slack.com/services/"
        f"T{_chars(r, string.ascii_uppercase + string.digits, 8)}/"
        f"B{_chars(r, string.ascii_uppercase + string.digits, 10)}/{_mixed(r, ALNUM, 24)}"
    ),
    "stripe_live": lambda r: "sk_live_" + _mixed(r, ALNUM, 24),
    "stripe_restricted": lambda r: "rk_live_" + _mixed(r, ALNUM, 24),
    "stripe_test": lambda r: "sk_test_" + _mixed(r, ALNUM, 24),
    "stripe_webhook": lambda r: "whsec_" + _mixed(r, ALNUM, 32),
    "aws_akia": lambda r: "AKIA" + _chars(r, string.ascii_uppercase + "234567", 16),
    "aws_asia": lambda r: "ASIA" + _chars(r, string.ascii_uppercase + "234567", 16),
    "aws_secret": lambda r: _mixed(r, ALNUM + "+/", 40),
    "aws_session": lambda r: "IQoJb3JpZ2luX2Vj" + _mixed(r, ALNUM + "+/", 300),
    "google_api": lambda r: "AIza" + _mixed(r, B64URL, 35),
    "google_oauth_secret": lambda r: "GOCSPX-" + _mixed(r, B64URL, 28),
    "google_oauth_token": lambda r: "ya29." + _mixed(r, B64URL, 120),
    "huggingface": lambda r: "hf_" + _mixed(r, string.ascii_letters, 34),
    "npm": lambda r: "npm_" + _mixed(r, ALNUM, 36),
    "pypi": lambda r: "pypi-AgEIcHlwaS5vcmc" + _mixed(r, B64URL, 70),
    "twilio": lambda r: "SK" + _chars(r, HEX, 32),
    "sendgrid": lambda r: f"SG.{_mixed(r, B64URL, 22)}.{_mixed(r, B64URL, 43)}",
    "digitalocean": lambda r: "dop_v1_" + _chars(r, HEX, 64),
    "shopify": lambda r: "shpat_" + _chars(r, HEX, 32),
    "databricks": lambda r: "dapi" + _chars(r, HEX, 32),
    "linear": lambda r: "lin_api_" + _mixed(r, ALNUM, 40),
    "groq": lambda r: "gsk_" + _mixed(r, ALNUM, 52),
    "xai": lambda r: "xai-" + _mixed(r, ALNUM, 80),
    "replicate": lambda r: "r8_" + _mixed(r, ALNUM, 37),
    "perplexity": lambda r: "pplx-" + _mixed(r, ALNUM, 48),
    "mailgun": lambda r: "key-" + _chars(r, HEX, 32),
    "age": lambda r: "AGE-SECRET-KEY-1" + _chars(r, string.ascii_uppercase + string.digits, 58),
    "jwt": _jwt,
    "pem_rsa": _pem("RSA PRIVATE KEY"),
    "pem_pkcs8": _pem("PRIVATE KEY"),
    "pem_ec": _pem("EC PRIVATE KEY", 3),
    "pem_dsa": _pem("DSA PRIVATE KEY"),
    "pem_openssh": _pem("OPENSSH PRIVATE KEY", 7),
    "pem_encrypted": _pem("ENCRYPTED PRIVATE KEY"),
    "pem_pgp": _pem("PGP PRIVATE KEY BLOCK", 8),
    "pem_body_lines": lambda r: "\n".join(_mixed(r, ALNUM + "+/", 70) for _ in range(5)),
    "hex32": lambda r: _chars(r, HEX, 31) + "7",
    "opaque_token": lambda r: _mixed(r, ALNUM, 40),
    "password": _password,
    "password_spaces": lambda r: (
        f"correct horse {r.randrange(10, 99)} battery {_mixed(r, ALNUM, 6)}"
    ),
    "url_password": lambda r: _mixed(r, ALNUM + "-._~!*", 14) + r.choice(ALNUM),
    "basic_credentials": lambda r: base64.b64encode(f"deploy:{_password(r)}".encode()).decode(),
}

# Names derived from another value of the same case (for must_remove).
DERIVED: dict[str, Callable[[str], str]] = {
    "_body": lambda pem: "\n".join(pem.splitlines()[1:-1]),
    "_escaped": lambda pem: pem.replace("\n", "\\n"),
    "_escaped_body": lambda pem: "\\n".join(pem.splitlines()[1:-1]),
    "_indented": lambda pem: pem.replace("\n", "\n    "),
    "_indented_body": lambda pem: "\n    ".join(pem.splitlines()[1:-1]),
    "_path": lambda url: url.split("/services/", 1)[1],
}
TEMPLATE = re.compile(r"<<([a-z0-9_]+)(#\d+)?>>")


class Case:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.id: str = raw["id"]
        rng = random.Random(self.id)
        values: dict[str, str] = {}

        def expand(m: re.Match[str]) -> str:
            key = m.group(0)
            if key not in values:
                values[key] = self._value(m.group(1), m.group(2) or "", rng, values)
            return values[key]

        def sub(s: str) -> str:
            return TEMPLATE.sub(expand, s)

        self.text = sub(raw["text"])
        self.must_remove = [sub(s) for s in raw["must_remove"]]
        self.must_keep = [sub(s) for s in raw["must_keep"]]
        self.kinds: list[str] = raw.get("kinds", [])
        self.exact: bool = raw.get("exact", False)

    @staticmethod
    def _value(name: str, tag: str, rng: random.Random, values: dict[str, str]) -> str:
        if name in GENERATORS:
            return GENERATORS[name](rng)
        for suffix in sorted(DERIVED, key=len, reverse=True):
            base = name.removesuffix(suffix)
            if base != name and base in GENERATORS:
                source = values.setdefault(f"<<{base}{tag}>>", GENERATORS[base](rng))
                return DERIVED[suffix](source)
        raise KeyError(f"no generator for {name}")


def load_corpus() -> list[Case]:
    return [Case(json.loads(line)) for line in CORPUS.read_text().splitlines() if line.strip()]


CASES = load_corpus()
SECRET_CASES = [c for c in CASES if c.must_remove]
BENIGN_CASES = [c for c in CASES if c.exact]


def leaks(secret: str, out: str) -> list[str]:
    """Pieces of ``secret`` still in ``out``: the whole, or any 10 characters of its second half."""
    if secret in out:
        return [secret]
    tail = secret[len(secret) // 2 :]
    if len(secret) < 20:
        return []
    return [tail[i : i + 10] for i in range(len(tail) - 9) if tail[i : i + 10] in out]


# ---------------------------------------------------------------------------
# The corpus


def test_corpus_covers_every_kind() -> None:
    kinds = {k for c in CASES for k in c.kinds}
    expected = {
        "openai_key", "anthropic_key", "github_token", "gitlab_token", "slack_token",
        "slack_webhook", "stripe_key", "aws_access_key_id", "google_api_key",
        "huggingface_token", "npm_token", "pypi_token", "twilio_key", "sendgrid_key",
        "jwt", "private_key", "url_password", "authorization", "bearer_token",
        "password", "secret", "token", "key", "credential", "private",
    }  # fmt: skip
    assert expected <= kinds, expected - kinds
    assert len(BENIGN_CASES) >= 40


@pytest.mark.parametrize("case", SECRET_CASES, ids=lambda c: c.id)
def test_planted_secrets_are_removed(case: Case) -> None:
    out, findings = redact_with_report(case.text)
    for secret in case.must_remove:
        assert not leaks(secret, out), f"{case.id}: leaked {leaks(secret, out)[:3]} in {out!r}"
    for keep in case.must_keep:
        assert keep in out, f"{case.id}: lost {keep!r} in {out!r}"
    found = {f.kind for f in findings}
    assert set(case.kinds) <= found, f"{case.id}: kinds {found}, expected {case.kinds}"
    # The report locates, it never repeats: no secret inside a Finding.
    for secret in case.must_remove:
        assert secret not in repr(findings)


@pytest.mark.parametrize("case", BENIGN_CASES, ids=lambda c: c.id)
def test_benign_text_is_kept_exactly(case: Case) -> None:
    out, findings = redact_with_report(case.text)
    assert findings == []
    assert out == case.text


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_idempotent_on_corpus(case: Case) -> None:
    once = redact(case.text)
    assert redact(once) == once


def test_findings_are_sorted_disjoint_and_rebuild_the_output() -> None:
    text = "\n".join(c.text for c in SECRET_CASES)
    out, findings = redact_with_report(text)
    pos, parts = 0, []
    for f in findings:
        assert pos <= f.start < f.end <= len(text)
        parts += [text[pos : f.start], f"[REDACTED:{f.kind}]"]
        pos = f.end
    assert "".join([*parts, text[pos:]]) == out
    for case in SECRET_CASES:
        for secret in case.must_remove:
            if len(secret) >= 12:  # short ones ("one") occur elsewhere in the joined text
                assert not leaks(secret, out), case.id


# ---------------------------------------------------------------------------
# Specific rules


def test_private_spans() -> None:
    assert redact("a <private>b</private> c") == "a [REDACTED:private] c"
    assert redact("a <PRIVATE>b\nc</Private> d") == "a [REDACTED:private] d"
    # Nested: the outer span is dropped whole, including text after the inner close.
    assert redact("x <private>1 <private>2</private> 3</private> y") == "x [REDACTED:private] y"
    # Unclosed: to the end of the text.
    assert redact("keep <private>drop\nall of this") == "keep [REDACTED:private]"
    # A stray closing tag is text.
    assert redact("a </private> b") == "a </private> b"
    # The marker keeps neighbours from joining into a new tag.
    once = redact("<priv<private>x</private>ate>y</private>")
    assert once == "<priv[REDACTED:private]ate>y</private>"
    assert redact(once) == once


def test_pem_unclosed_runs_to_end_and_public_blocks_stay() -> None:
    key = GENERATORS["pem_rsa"](random.Random(1))
    cut = key[: len(key) // 2]
    assert redact(f"start\n{cut}") == "start\n[REDACTED:private_key]"
    public = "-----BEGIN PUBLIC KEY-----\nMFkwEw\n-----END PUBLIC KEY-----"
    assert redact(public) == public


def test_url_password_keeps_user_and_host() -> None:
    out = redact("postgres://app:pa55w0rd-x@db.internal:5432/app")
    assert out == "postgres://app:[REDACTED:url_password]@db.internal:5432/app"
    # A placeholder is not a password.
    text = "https://user:${TOKEN}@github.com/acme/app.git"
    assert redact(text) == text


def test_assignment_keeps_name_and_quotes() -> None:
    assert redact('export DB_PASSWORD="s3cr3t value"') == 'export DB_PASSWORD="[REDACTED:password]"'
    assert redact("DB_PASSWORD=s3cr3t # note") == "DB_PASSWORD=[REDACTED:password] # note"
    assert redact('{"token":"abc123xyz"}') == '{"token":"[REDACTED:token]"}'
    assert redact("Authorization: Bearer abcDEF123ghiJKL456") == (
        "Authorization: Bearer [REDACTED:authorization]"
    )


def test_value_kind_is_refined_when_it_is_a_known_token() -> None:
    token = GENERATORS["github_pat_classic"](random.Random(2))
    _, findings = redact_with_report(f"GITHUB_TOKEN={token}")
    assert [f.kind for f in findings] == ["github_token"]


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True), ("DB_PASSWORD", True), ("PGPASSWORD", True), ("passwd", True),
        ("dbPass", True), ("db_pass", True), ("DB_PWD", True), ("api_key", True),
        ("apiKey", True), ("x-api-key", True), ("AWS_SECRET_ACCESS_KEY", True),
        ("client_secret", True), ("GITHUB_TOKEN", True), ("Authorization", True),
        ("cookie", True), ("credentials", True), ("private_key", True),
        ("PWD", False), ("bypass", False), ("passport", False), ("primary_key", False),
        ("public_key", False), ("key", False), ("tokens", False), ("token_count", False),
        ("secret_name", False), ("password_hash", False), ("keyboard", False),
    ],
)  # fmt: skip
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


# ---------------------------------------------------------------------------
# JSON-like structures


def test_redact_obj_walks_and_redacts_secret_keys() -> None:
    token = GENERATORS["github_pat_classic"](random.Random(3))
    payload = {
        "session_id": "abc-123",
        "tool_input": {"command": f"gh auth login --with-token {token}", "timeout": 30},
        "env": {"DB_PASSWORD": "hunter2", "API_KEY": "", "PORT": 5432, "token": 12345678},
        "headers": [{"Authorization": "Bearer xyz"}, {"Accept": "json"}],
        "credentials": ["first-secret", "second-secret"],
        "flags": (True, None, 1.5),
        7: "non-string key",
    }
    before = json.dumps(payload, default=str)
    out, findings = redact_obj_with_report(payload)
    assert json.dumps(payload, default=str) == before, "the input must not be mutated"
    assert out["session_id"] == "abc-123"
    assert token not in out["tool_input"]["command"]
    assert out["tool_input"]["timeout"] == 30
    assert out["env"] == {
        "DB_PASSWORD": "[REDACTED:password]",
        "API_KEY": "",
        "PORT": 5432,
        "token": "[REDACTED:token]",
    }
    assert out["headers"] == [{"Authorization": "[REDACTED:authorization]"}, {"Accept": "json"}]
    assert out["credentials"] == ["[REDACTED:credential]"] * 2
    assert out["flags"] == [True, None, 1.5]
    assert out[7] == "non-string key"
    paths = {f.path for f in findings}
    assert {"/tool_input/command", "/env/DB_PASSWORD", "/headers/0/Authorization"} <= paths
    assert "/credentials/1" in paths
    assert "hunter2" not in repr(findings)
    assert redact_obj(out) == out


def test_redact_obj_scalars_and_depth() -> None:
    assert redact_obj("password=hunter22") == "password=[REDACTED:password]"
    assert redact_obj(None) is None
    assert redact_obj(3) == 3
    deep: Any = "AKIA" + "Z" * 16
    for _ in range(5000):  # deeper than the recursion limit
        deep = {"a": [deep]}
    out = redact_obj(deep)
    for _ in range(5000):
        out = out["a"][0]
    assert out == "[REDACTED:aws_access_key_id]"


def test_redact_obj_key_with_secret_and_pointer_escaping() -> None:
    out, findings = redact_obj_with_report({"a/b~c": {"password": "x1"}})
    assert out == {"a/b~c": {"password": "[REDACTED:password]"}}
    assert findings == [Finding("password", 0, 2, "/a~1b~0c/password")]


# ---------------------------------------------------------------------------
# Properties


FRAGMENTS = [c.text for c in CASES]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(FRAGMENTS),
            st.text(alphabet=string.printable, max_size=40),
            st.sampled_from(["<private>", "</private>", "=", ":", '"', "'", "\n", " ", "&", "@"]),
        ),
        max_size=8,
    )
)
def test_idempotent_on_compositions(parts: list[str]) -> None:
    text = "".join(parts)
    once = redact(text)
    assert redact(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_and_plain_text_roundtrips(text: str) -> None:
    out = redact(text)
    assert isinstance(out, str)
    if "[REDACTED:" not in out:
        assert out == text


# ---------------------------------------------------------------------------
# Cheap where nothing is secret, and never at the cost of a result
#
# mask_of leaves out of the pattern the alternatives that cannot match; the
# redaction of a payload or a batch looks at all its strings at once; clean
# strings are remembered. None of it may change what a string becomes.

# Pieces that sit near the edges of the shortcuts: flag-like prefixes, names
# near separators (or across a line), runs, spellings that (?i) folds.
EDGES = [
    "--token ", "--cookie ", "--authorization ", " -q README.md ", "-x ", "<div>",
    "<password>", "</password>", "password", "pass", "key", "token", ":", "=", "\n",
    "Bearer ", "://", "@", "sk-", "ghp_", "AKIA", "eyJ", "SG.", "xoxb-", "ya29.",
    "pa\u017f\u017fword", "author\u0130zation", "\u0131", "\u212a", "→", "é",
    "<private>", "[REDACTED:x]", "a" * 25,
]  # fmt: skip
COMPOSED = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.sampled_from(FRAGMENTS).map(lambda f: f[len(f) // 3 : 2 * len(f) // 3]),
        st.text(alphabet=string.printable, max_size=30),
        st.sampled_from(EDGES),
    ),
    max_size=8,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(COMPOSED)
def test_a_mask_leaves_out_only_alternatives_that_cannot_match(text: str) -> None:
    from reverie.store.redaction import _scan
    from reverie.store.secret_patterns import _ALTS

    assert _scan(text) == _scan(text, (1 << len(_ALTS)) - 1)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_corpus_finds_the_same_with_the_whole_pattern(case: Case) -> None:
    from reverie.store.redaction import _scan
    from reverie.store.secret_patterns import _ALTS

    assert _scan(case.text) == _scan(case.text, (1 << len(_ALTS)) - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(COMPOSED, min_size=1, max_size=6))
def test_a_string_becomes_the_same_alone_and_among_others(texts: list[str]) -> None:
    payload = {f"k{n}": t for n, t in enumerate(texts)}
    payload["nested"] = {"list": list(texts), "token words --x <div> key: pass": "-q x"}
    out = redact_obj(payload)
    assert [out[f"k{n}"] for n in range(len(texts))] == [redact(t) for t in texts]
    assert out["nested"]["list"] == [redact(t) for t in texts]
    assert redact_obj_with_report(payload)[0] == out


def _joined(obj: Any) -> str:
    """A derived text that joins a payload's strings (so it can assemble a secret)."""
    return " ".join(f"{k}: {v}" for k, v in obj.items() if isinstance(v, str))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(COMPOSED, min_size=1, max_size=3), min_size=1, max_size=12))
def test_a_batch_is_redacted_as_each_payload_alone(batch: list[list[str]]) -> None:
    from reverie.store.redaction_objects import redact_objs_deriving

    payloads = [{f"k{n}": t for n, t in enumerate(texts)} for texts in batch]
    got = redact_objs_deriving(payloads, lambda i, obj: _joined(obj))
    for payload, (out, text) in zip(payloads, got, strict=True):
        expected = redact_obj(payload)
        assert out == expected
        assert text == redact(_joined(expected))


def test_a_derived_text_that_assembles_a_secret_is_redacted() -> None:
    from reverie.store.redaction_objects import redact_objs_deriving

    # Each string is clean alone; the text made of them is an assignment.
    payloads = [{"name": "DB_PASSWORD", "value": "hunter2x"}, {"name": "PORT", "value": "5432"}]
    got = redact_objs_deriving(payloads, lambda i, obj: f"{obj['name']}={obj['value']}")
    assert got == [
        (payloads[0], "DB_PASSWORD=[REDACTED:password]"),
        (payloads[1], "PORT=5432"),
    ]


def test_flags_named_cookie_or_authorization_need_no_other_word() -> None:
    assert (
        redact("curl --cookie sid=abc123 https://x") == "curl --cookie [REDACTED:cookie] https://x"
    )
    assert redact("run --authorization Bearer abcDEF123ghiJKL456mno") == (
        "run --authorization Bearer [REDACTED:authorization]"
    )
    assert redact("--authorization $TOKEN") == "--authorization $TOKEN"


def test_a_flag_like_prefix_hides_no_token() -> None:
    token = GENERATORS["github_pat_classic"](random.Random(4))
    for text in (f"-{token} x and a token", f"--{token} x", f"<{token}> password"):
        assert token not in redact(text), text


def test_spellings_that_case_folding_matches_are_found() -> None:
    assert redact("DB_PA\u017f\u017fWORD=hunter2x") == "DB_PA\u017f\u017fWORD=[REDACTED:password]"
    assert redact("author\u0130zation: Basic abc123def456") == (
        "author\u0130zation: Basic [REDACTED:authorization]"
    )


def test_clean_strings_are_remembered_and_secrets_never() -> None:
    from reverie.store import redaction

    token = GENERATORS["github_pat_classic"](random.Random(5))
    payload = {"cases": [c.text for c in CASES], "cwd": "/home/u/src/app", "t": f"x {token}"}
    redact_obj(payload)
    assert "/home/u/src/app" in redaction._clean
    assert not any(token in remembered for remembered in redaction._clean)
    # Only what redaction leaves as it is is remembered...
    for remembered in list(redaction._clean):
        assert redaction._scan(remembered) == [], remembered
    # ... and remembered or not, a string becomes the same.
    for case in CASES:
        assert redact(case.text) == redact(case.text)


def test_tokens_looked_for_in_runs_are_runs() -> None:
    """A RUN token's every match starts with RUN_MIN or more of [A-Za-z0-9_-] (see mask_of).

    That is: the pattern's leading items (lookarounds aside), up to the first
    that may match nothing, consume only those characters, at least RUN_MIN
    of them; and its triggers are made of them, so they lie in that run.
    """
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    from reverie.store.secret_patterns import _TOKENS, RUN, RUN_MIN

    allowed = set(map(ord, string.ascii_letters + string.digits + "_-"))

    def consumed(items: Any) -> set[int]:
        chars: set[int] = set()
        for op, av in items:
            if op is c.LITERAL:
                chars.add(av)
            elif op is c.IN:
                for kind, arg in av:
                    if kind is c.LITERAL:
                        chars.add(arg)
                    elif kind is c.RANGE:
                        chars.update(range(arg[0], arg[1] + 1))
                    else:
                        chars.add(-1)  # a category, a negation: not provably in the class
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                chars |= consumed(av[2])
            elif op is c.SUBPATTERN:
                chars |= consumed(av[3])
            elif op is c.BRANCH:
                for branch in av[1]:
                    chars |= consumed(branch)
            elif op not in (c.ASSERT, c.ASSERT_NOT):  # lookarounds consume nothing
                chars.add(-1)
        return chars

    for kind, pattern, _, triggers, where in _TOKENS:
        if where is not RUN:
            continue
        run = 0
        for item in _parser.parse(pattern).data:
            if item[0] in (c.ASSERT, c.ASSERT_NOT):
                continue
            item_width = _parser.SubPattern(_parser.State(), [item]).getwidth()[0]
            if item_width == 0 or not consumed([item]) <= allowed:
                break
            run += item_width
        assert run >= RUN_MIN, kind
        for trigger in triggers:
            assert set(map(ord, trigger.lower())) <= allowed, (kind, trigger)


def test_every_secret_looking_name_holds_a_name_trigger() -> None:
    from reverie.store.secret_patterns import NAME_TRIGGERS
    from reverie.store.secret_rules import _NAME_KEYWORD

    words = re.search(r"\(\?i:([a-z|?]+)\)", _NAME_KEYWORD.compiled.pattern)
    assert words is not None
    for word in words.group(1).replace("?", "").split("|"):
        assert any(word.startswith(t) for t in NAME_TRIGGERS), word


# ---------------------------------------------------------------------------
# Time: linear, no catastrophic backtracking

ADVERSARIAL = [
    "a",
    "sk-",
    "eyJ-",
    "eyJa.",
    "://a:b",
    "://a:b@",
    "<private>",
    "</private>",
    "-----BEGIN RSA PRIVATE KEY-----\n",
    "--",
    "token=",
    "self.token=",
    "key=",
    "pass=pass",
    'password="',
    "password: x ",
    "Authorization: ",
    "Bearer ",
    "<password>",
    "AKIA",
    "&a=",
    '\\"token\\": \\"',
    "ghp_",
    "hooks.slack.com/services/",
    "x" * 200 + " ",
    "--token ",
    " -" + "a" * 60,
]
BOUND_SECONDS = 6.0  # linear runs take well under 2 s on a loaded 2-core box


@pytest.mark.parametrize("unit", ADVERSARIAL, ids=repr)
def test_one_megabyte_adversarial_input_is_bounded(unit: str) -> None:
    text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    started = time.perf_counter()
    redact(text)
    elapsed = time.perf_counter() - started
    assert elapsed < BOUND_SECONDS, f"{elapsed:.2f} s for 1 MB of {unit!r}"

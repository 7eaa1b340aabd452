"""The http embedder: an OpenAI-compatible ``POST /v1/embeddings`` endpoint.

Works with Ollama, llama.cpp's server, vLLM, text-embeddings-inference and
OpenAI itself. Standard library only (store/http_json.py). Texts are sent in batches;
connection errors, timeouts, 429 and 5xx answers are retried with
exponential backoff (honouring ``Retry-After``), a bounded number of times;
other answers fail at once. Every failure becomes
:class:`reverie.errors.Unavailable` whose message names the endpoint and
never the API key.
"""

from __future__ import annotations

import math
import os
import time
import urllib.parse
from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt
from reverie.errors import ConfigError, Unavailable
from reverie.store.embedding import EmbedderConfig
from reverie.store.http_json import PostFailed, endpoint, post_json, scrub, shown_url

__all__ = ["HttpEmbedder", "endpoint_url"]

_MAX_RETRY_AFTER_S = 30.0
_MAX_BACKOFF_S = 8.0
_MAX_RESPONSE_BYTES = 256 * 1024 * 1024


class _Item(msgspec.Struct):
    index: int
    embedding: list[float]


class _Response(msgspec.Struct):
    data: list[_Item]


_decode = msgspec.json.Decoder(_Response).decode
_encode = msgspec.json.Encoder().encode


def endpoint_url(url: str) -> str:
    """The embeddings endpoint for a base URL.

    "http://h:11434" and "http://h:11434/v1" both give
    "http://h:11434/v1/embeddings"; a URL already ending in "/embeddings" is
    used as it is.
    """
    return endpoint(url, "/embeddings")


class _Retryable(Exception):
    """One attempt failed in a way worth another try."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class HttpEmbedder:
    """Embeds through an OpenAI-compatible HTTP server. Thread-safe."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str = "",
        dim: int = 0,
        batch_size: int = 64,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        full = endpoint_url(url)
        if urllib.parse.urlsplit(full).scheme not in ("http", "https"):
            raise ConfigError(f"embedder url must be http:// or https://, not {shown_url(url)!r}")
        if not model:
            raise ConfigError("the http embedder needs a model name ([embedder] model)")
        self._endpoint = full
        self._shown = shown_url(full)
        self._model = model
        self._api_key = api_key
        self._dim = dim
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        # faults: set once every retry failed to reach the server. While it is
        # down, each call makes one attempt and no retry sleeps, so that a search
        # falls back to lexical at once instead of waiting out the backoff.
        self._down = False

    @classmethod
    def from_config(cls, cfg: EmbedderConfig) -> HttpEmbedder:
        if not cfg.url:
            raise ConfigError("the http embedder needs a url ([embedder] url)")
        key = cfg.api_key
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env, "")
            if not key:
                raise ConfigError(f"[embedder] api_key_env names {cfg.api_key_env}, which is unset")
        return cls(
            cfg.url,
            cfg.model,
            api_key=key,
            dim=cfg.dim,
            batch_size=cfg.batch_size,
            timeout_s=cfg.timeout_s,
            retries=cfg.retries,
            backoff_s=cfg.backoff_s,
        )

    @property
    def model_id(self) -> str:
        return f"http:{self._model}"

    @property
    def dim(self) -> int:
        """The vectors' dimension: configured, or learnt from the server (one request)."""
        if not self._dim:
            self.embed(["dimension probe"])
        return self._dim

    def __repr__(self) -> str:
        return f"HttpEmbedder(url={self._shown!r}, model={self._model!r}, dim={self._dim})"

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [
            self._embed_batch(texts[i : i + self._batch_size])
            for i in range(0, len(texts), self._batch_size)
        ]
        return np.concatenate(chunks)

    # -- one batch

    def _embed_batch(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        # Servers reject empty inputs; a space embeds "nothing" just as well.
        body = _encode({"model": self._model, "input": [t if t.strip() else " " for t in texts]})
        raw = self._post(body)
        try:
            items = _decode(raw).data
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise self._fail(f"malformed response: {e}") from None
        vectors = self._check(items, len(texts))
        # Normalised in float64: values past float32's range still give a unit vector.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors.astype(np.float32)

    def _check(self, items: list[_Item], n: int) -> npt.NDArray[np.float64]:
        if sorted(item.index for item in items) != list(range(n)):
            raise self._fail(f"malformed response: expected indices 0..{n - 1}, got {len(items)}")
        dims = {len(item.embedding) for item in items}
        if len(dims) != 1:
            raise self._fail(f"vectors of different dimensions {sorted(dims)} in one response")
        (got,) = dims
        if got == 0:
            raise self._fail("malformed response: empty vectors")
        if self._dim and got != self._dim:
            raise self._fail(f"dimension mismatch: expected {self._dim}, server returned {got}")
        vectors = np.empty((n, got), dtype=np.float64)
        for item in items:
            vectors[item.index] = item.embedding
        if not np.isfinite(vectors).all():
            raise self._fail("malformed response: non-finite values in vectors")
        self._dim = got
        return vectors

    def _post(self, body: bytes) -> bytes:
        attempt = 0
        while True:
            try:
                data = self._attempt(body)
                self._down = False
                return data
            except _Retryable as e:
                if self._down:
                    raise self._fail(f"{e.reason} (still down: not retried)") from None
                if attempt >= self._retries:
                    self._down = True
                    raise self._fail(f"{e.reason} (after {attempt + 1} attempts)") from None
                delay = min(self._backoff_s * 2**attempt, _MAX_BACKOFF_S)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, _MAX_RETRY_AFTER_S))
                time.sleep(delay)
                attempt += 1

    def _attempt(self, body: bytes) -> bytes:
        try:
            return post_json(
                self._endpoint,
                body,
                api_key=self._api_key,
                timeout_s=self._timeout_s,
                max_bytes=_MAX_RESPONSE_BYTES,
            )
        except PostFailed as e:
            if e.transient:
                raise _Retryable(e.reason, _retry_after(e.retry_after)) from None
            raise self._fail(e.reason, status=e.status) from None

    def _fail(self, reason: str, *, status: int | None = None) -> Unavailable:
        data: dict[str, object] = {"url": self._shown, "model": self._model}
        if status is not None:
            data["status"] = status
        return Unavailable(
            f"embedding server {self._shown}: {scrub(reason, self._api_key)}", data=data
        )


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None

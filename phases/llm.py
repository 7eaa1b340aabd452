"""An OpenAI-compatible chat client for REM's cluster summaries, with per-run caps.

``POST <url>/v1/chat/completions`` through store/http_json.py, as
store/embed_http.py does for embeddings. One attempt per call, no retry:
the caller falls back to its deterministic text on any failure, which is
the cheaper retry. Every failure is an :class:`LlmError` whose message
names the endpoint and never the API key (a server may echo it back).

`Budget` holds a run's caps: calls, and tokens (prompt + completion). A
call is refused before it is sent when its prompt estimate plus the
completion it may ask for would pass what is left; after the answer the
tokens counted are the response's ``usage`` when it has one, else the
estimate (characters / 4, rounded up).
"""

from __future__ import annotations

import math
import os
import urllib.parse
from dataclasses import dataclass

import msgspec
from reverie.phases.settings import RemLlmConfig
from reverie.store.http_json import PostFailed, endpoint, post_json, scrub, shown_url

__all__ = ["Budget", "ChatClient", "LlmError", "chat_url", "estimate_tokens"]

_MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class LlmError(Exception):
    """One chat call failed (HTTP error, timeout, bad JSON, empty answer, cap reached)."""


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Response(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None


_decode = msgspec.json.Decoder(_Response).decode
_encode = msgspec.json.Encoder().encode


def chat_url(url: str) -> str:
    """The chat endpoint for a base URL ("http://h:8080", ".../v1" or the full path)."""
    return endpoint(url, "/chat/completions")


def estimate_tokens(text: str) -> int:
    """A rough token count for text without a tokenizer: ~4 characters a token."""
    return math.ceil(len(text) / 4)


@dataclass
class Budget:
    """A run's remaining LLM allowance."""

    calls: int
    tokens: int
    used_calls: int = 0
    used_tokens: int = 0

    def admit(self, prompt_tokens: int, completion_tokens: int) -> str | None:
        """Why a call of this size may not be made now (None: it may)."""
        if self.used_calls >= self.calls:
            return f"call cap ({self.calls}) reached"
        if self.used_tokens + prompt_tokens + completion_tokens > self.tokens:
            return f"token cap ({self.tokens}) reached"
        return None


class ChatClient:
    """Chat completions from one endpoint and model. Thread-safe (no state but config)."""

    def __init__(self, cfg: RemLlmConfig) -> None:
        self.cfg = cfg
        self._endpoint = chat_url(cfg.url)
        self.shown = shown_url(self._endpoint)
        key = cfg.api_key
        self._key_problem = ""
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env, "")
            if not key:
                self._key_problem = f"api_key_env names {cfg.api_key_env}, which is unset"
        self._api_key = key

    def __repr__(self) -> str:
        return f"ChatClient(url={self.shown!r}, model={self.cfg.model!r})"

    @property
    def model(self) -> str:
        return self.cfg.model

    def complete(self, system: str, user: str, budget: Budget) -> str:
        """The answer's text; LlmError on any failure (the budget counts the call if sent)."""
        if self._key_problem:
            raise LlmError(self._key_problem)
        if urllib.parse.urlsplit(self._endpoint).scheme not in ("http", "https"):
            raise LlmError(f"url must be http:// or https://, not {self.shown!r}")
        prompt = estimate_tokens(system) + estimate_tokens(user)
        refused = budget.admit(prompt, self.cfg.max_completion_tokens)
        if refused:
            raise LlmError(refused)
        body = _encode(
            {
                "model": self.cfg.model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                "max_tokens": self.cfg.max_completion_tokens,
                "temperature": self.cfg.temperature,
                "stream": False,
            }
        )
        budget.used_calls += 1
        # Counted before the answer: a call that times out may still have cost it.
        budget.used_tokens += prompt
        raw = self._post(body)
        try:
            answer = _decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise self._fail(f"malformed response: {e}") from None
        text = (answer.choices[0].message.content or "").strip() if answer.choices else ""
        usage = answer.usage
        if usage is not None and (usage.total_tokens or usage.prompt_tokens):
            total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
            budget.used_tokens += total - prompt  # the usage replaces the estimate counted
        else:
            budget.used_tokens += estimate_tokens(text)
        if not text:
            raise self._fail("empty answer")
        return text

    def _post(self, body: bytes) -> bytes:
        try:
            return post_json(
                self._endpoint,
                body,
                api_key=self._api_key,
                timeout_s=self.cfg.timeout_s,
                max_bytes=_MAX_RESPONSE_BYTES,
            )
        except PostFailed as e:
            raise self._fail(e.reason) from None

    def _fail(self, reason: str) -> LlmError:
        return LlmError(f"{self.shown}: {scrub(reason, self._api_key)}")

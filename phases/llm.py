"""An OpenAI-compatible chat client for REM's cluster summaries, with per-run caps.

``POST <url>/v1/chat/completions`` with the standard library only (urllib),
as store/embed_http.py does for embeddings. One attempt per call, no retry:
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

import http.client
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import msgspec
from reverie import __version__
from reverie.phases.settings import RemLlmConfig

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
    base = url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def _shown(url: str) -> str:
    """The URL without user:password@, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


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
        self.shown = _shown(self._endpoint)
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
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"reverie/{__version__}",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self._endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as response:
                data: bytes = response.read(_MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode(errors="replace")
            e.close()
            reason = f"HTTP {e.code} {e.reason}" + (f": {detail}" if detail else "")
            raise self._fail(reason) from None
        except urllib.error.URLError as e:
            raise self._fail(f"cannot connect: {e.reason}") from None
        except TimeoutError:
            raise self._fail(f"no answer within {self.cfg.timeout_s:g} s") from None
        except (http.client.HTTPException, OSError) as e:
            raise self._fail(f"connection failed: {e or type(e).__name__}") from None
        if len(data) > _MAX_RESPONSE_BYTES:
            raise self._fail("response too large")
        return data

    def _fail(self, reason: str) -> LlmError:
        text = " ".join(reason.split())[:300]
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return LlmError(f"{self.shown}: {text}")

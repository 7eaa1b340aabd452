"""One JSON POST to an OpenAI-compatible HTTP endpoint, standard library only.

Shared by the http embedder (store/embed_http.py) and REM's chat client
(phases/llm.py): bearer auth, a timeout, a response-size cap and the mapping
of every urllib/http.client failure to one :class:`PostFailed` whose reason
never holds the API key (servers may echo it back, OpenAI's 401 does).
Retrying, and which exception the caller finally raises, stay with the caller.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request

from reverie import __version__

__all__ = ["RETRY_STATUS", "PostFailed", "endpoint", "post_json", "scrub", "shown_url"]

# Answers worth another try: timeouts, rate limits and server-side trouble.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class PostFailed(Exception):
    """One POST failed.

    ``transient``: the server could not be reached, did not answer in time or
    answered with a status in RETRY_STATUS (another try may succeed).
    ``status``: the HTTP status of an error answer, else None.
    """

    def __init__(
        self,
        reason: str,
        *,
        transient: bool,
        status: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.status = status
        self.retry_after = retry_after


def endpoint(url: str, path: str) -> str:
    """The endpoint `path` ("/embeddings") of an OpenAI-style base URL.

    "http://h:11434" and "http://h:11434/v1" both give
    "http://h:11434/v1/embeddings"; a URL already ending in `path` is used as it is.
    """
    base = url.rstrip("/")
    if base.endswith(path):
        return base
    if base.endswith("/v1"):
        return base + path
    return base + "/v1" + path


def scrub(text: str, secret: str) -> str:
    """Text fit for a message: the secret masked, white space folded, 300 characters at most."""
    if secret:
        text = text.replace(secret, "***")
    return " ".join(text.split())[:300]


def shown_url(url: str) -> str:
    """The URL without user:password@, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def post_json(url: str, body: bytes, *, api_key: str, timeout_s: float, max_bytes: int) -> bytes:
    """The response body of ``POST url`` with a JSON body; PostFailed on any failure."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"reverie/{__version__}",
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            data: bytes = response.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        detail = scrub(e.read(500).decode(errors="replace"), api_key)
        e.close()
        reason = f"HTTP {e.code} {e.reason}" + (f": {detail}" if detail else "")
        raise PostFailed(
            reason,
            transient=e.code in RETRY_STATUS,
            status=e.code,
            retry_after=e.headers.get("Retry-After"),
        ) from None
    except urllib.error.URLError as e:
        raise PostFailed(
            f"cannot connect: {scrub(str(e.reason), api_key)}", transient=True
        ) from None
    except TimeoutError:
        raise PostFailed(f"no answer within {timeout_s:g} s", transient=True) from None
    except (http.client.HTTPException, OSError) as e:
        reason = scrub(str(e) or type(e).__name__, api_key)
        raise PostFailed(f"connection failed: {reason}", transient=True) from None
    if len(data) > max_bytes:
        raise PostFailed("response too large", transient=False)
    return data

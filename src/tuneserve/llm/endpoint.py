"""OpenAI-compatible endpoints as the evaluation and synthesis tools reach them: the `openai`
client, with its retries (exponential backoff with jitter on 408/409/429/5xx and connection
errors, honouring Retry-After) and a timeout.

Owns: building a client from a base URL and a key from the environment. Keys never come from a
flag (they would land in shell history and process lists).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

API_KEY_ENV = ("TUNESERVE_API_KEY", "OPENAI_API_KEY")
JUDGE_API_KEY_ENV = "TUNESERVE_JUDGE_API_KEY"


def normalize_base_url(url: str) -> str:
    """http://host:8015 and http://host:8015/v1 both mean the OpenAI API root .../v1."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path or '/v1'}"


def api_key(judge: bool = False) -> str:
    """The key for the endpoint ($TUNESERVE_API_KEY or $OPENAI_API_KEY), or for a separate judge
    endpoint ($TUNESERVE_JUDGE_API_KEY, else the same). A server without keys takes any value."""
    names = ((JUDGE_API_KEY_ENV,) if judge else ()) + API_KEY_ENV
    return next((os.environ[n] for n in names if os.environ.get(n)), "unused")


def make_client(base_url: str, key: str, *, max_retries: int = 5, timeout_s: float = 300.0):
    from openai import OpenAI

    return OpenAI(base_url=normalize_base_url(base_url), api_key=key, max_retries=max_retries, timeout=timeout_s)

"""Hugging Face hub downloads that fail within seconds when the hub cannot be reached.

`huggingface_hub` retries a failing connection with back-off (about 25 s with no network) before it looks in the
local cache. Here the hub's host is probed once per process (a TCP connect, bounded by `GPT1_HUB_TIMEOUT`, default
3 s, DNS included); when it does not answer, or `HF_HUB_OFFLINE` is set, only the local cache is read. A repo that
is neither downloadable nor cached raises `HubUnavailable`, whose message says which and why, and whose `repo_id`
lets the CLI say which flag to pass instead.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_probed: dict[str, str | None] = {}  # "host:port" -> None (reachable) or why not


class HubUnavailable(ValueError, OSError):
    """A hub id that could not be downloaded and is not in the local cache; `repo_id` is the id asked for and
    `detail` says why (without the id), so callers can word their own message around it. Both a ValueError (as a
    model's CheckpointError) and an OSError (as the tokenizer's download error was), so existing handlers catch it."""

    def __init__(self, repo_id: str, detail: str, message: str | None = None) -> None:
        super().__init__(message or f"{repo_id}: {detail}.")
        self.repo_id, self.detail = repo_id, detail


def offline_reason() -> str | None:
    """Why the hub cannot be used right now (HF_HUB_OFFLINE, or its host does not answer), or None if it can."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None  # the connection goes through a proxy we cannot probe directly: let huggingface_hub try
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    key = f"{host}:{port}"
    if key not in _probed:
        _probed[key] = _probe(host, port, float(os.environ.get("GPT1_HUB_TIMEOUT", "3")))
    return _probed[key]


def _probe(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection to host:port opens within `timeout` seconds, else the reason it did not.

    The attempt runs in a daemon thread because name resolution ignores socket timeouts; a stuck resolver then
    costs `timeout` seconds, not its own minutes.
    """
    result: dict[str, object] = {}

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=attempt, name="gpt1-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get("ok"):
        return None
    error = result.get("error")
    if error is None:
        return f"{host} did not answer within {timeout:g} s"
    return f"{host} cannot be reached: {getattr(error, 'strerror', None) or error}"


def fetch(repo_id: str, get: Callable[[bool], str]) -> Path:
    """`get(local_files_only)` online when the hub answers, else (or when that fails) from the local cache only."""
    reason = offline_reason()
    online_error: Exception | None = None
    if reason is None:
        try:
            return Path(get(False))
        except Exception as e:  # unknown repo, gated, network trouble: the cache may still have it
            online_error = e
    try:
        return Path(get(True))
    except Exception:
        pass
    if online_error is None:
        raise HubUnavailable(repo_id, f"not in the local cache, and the hub is unavailable ({reason})")
    if type(online_error).__name__ == "RepositoryNotFoundError":
        raise HubUnavailable(repo_id, "the hub has no repo of that name (or it is private)")
    first = str(online_error).strip().splitlines()[0] if str(online_error).strip() else ""
    raise HubUnavailable(
        repo_id,
        f"the hub download failed ({type(online_error).__name__}: {first[:200]}) and it is not in the local cache",
    )

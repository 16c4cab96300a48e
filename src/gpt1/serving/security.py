"""Who may call `gpt1 serve`: API keys (`Authorization: Bearer KEY`) and the browser origins allowed by CORS.

Keys guard every path except the few that must stay open (`/health` for load balancers, `/` the playground page,
which then asks for the key): a new endpoint is protected from the start. Keys are compared in constant time,
as SHA-256 digests (equal lengths, so not even a key's length leaks), against every configured key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

__all__ = ["API_KEY_ENV", "OPEN_PATHS", "add_api_key_check", "add_cors", "api_keys_from", "check_cors_origins"]

API_KEY_ENV = "GPT1_API_KEY"
OPEN_PATHS = frozenset({"/", "/health"})  # everything else (/v1/*, /tokenize, /metrics, ...) needs a key


# ---- keys ---------------------------------------------------------------------------------------------------------
def api_keys_from(flags: Sequence[str] | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The keys `gpt1 serve` accepts: the `--api-key` flags if any, else `GPT1_API_KEY` (commas between several
    keys, e.g. an old and a new one while clients move over); none means no key is asked for."""
    if flags:
        return check_api_keys(flags, "--api-key")
    value = environ.get(API_KEY_ENV, "")
    if not value.strip():
        return ()
    return check_api_keys([k.strip() for k in value.split(",")], API_KEY_ENV)


def check_api_keys(keys: Sequence[str], source: str = "api_keys") -> tuple[str, ...]:
    """Refuse a key that cannot travel in an HTTP header as one bearer token (never echoing the key itself)."""
    for i, key in enumerate(keys, 1):
        bad = [c for c in key if not 0x21 <= ord(c) <= 0x7E or c == ","]
        if not key or bad:
            what = "is empty" if not key else f"has {len(bad)} character(s) that are spaces, commas or not ASCII"
            raise ValueError(
                f"{source}: key {i} {what}; use printable ASCII without spaces or commas, e.g. "
                f"python -c 'import secrets; print(secrets.token_urlsafe(32))'."
            )
    return tuple(dict.fromkeys(keys))


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode("latin-1") if isinstance(key, str) else key).digest()


def key_matches(candidate: bytes, digests: Sequence[bytes]) -> bool:
    """Whether `candidate` is one of the keys: every key is compared (no early exit), each in constant time."""
    probe = _digest(candidate)
    found = False
    for d in digests:
        found |= hmac.compare_digest(probe, d)
    return found


def _unauthorized(message: str) -> JSONResponse:
    # OpenAI's 401 body (protocol.error_response's shape, with OpenAI's code for it).
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
        401,
        headers={"WWW-Authenticate": "Bearer"},
    )


class _ApiKeyCheck:
    """ASGI middleware: 401 unless `Authorization: Bearer KEY` carries a configured key, on all but OPEN_PATHS."""

    def __init__(self, app, keys: Sequence[str]) -> None:
        self.app, self.digests = app, [_digest(k) for k in keys]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            response = _unauthorized(
                "this server needs an API key: send the header 'Authorization: Bearer KEY' "
                "(the key gpt1 serve was started with)."
            )
        elif not key_matches(token.strip(), self.digests):
            response = _unauthorized("incorrect API key provided.")
        else:
            return await self.app(scope, receive, send)
        await response(scope, receive, send)


def add_api_key_check(app: FastAPI, keys: Sequence[str]) -> None:
    """Require one of `keys` on every path but OPEN_PATHS; no keys, no check (the server answers everyone)."""
    if keys:
        app.add_middleware(_ApiKeyCheck, keys=check_api_keys(keys))


# ---- CORS ---------------------------------------------------------------------------------------------------------
def check_cors_origins(origins: Sequence[str]) -> tuple[str, ...]:
    """Refuse what is not an origin (`scheme://host[:port]`, no path) or `*`, naming the value."""
    for origin in origins:
        if origin == "*":
            continue
        try:
            parts = urlsplit(origin)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ValueError(
                f"--cors-origin {origin}: not an origin; use scheme://host[:port] with no path or trailing slash "
                f"(e.g. https://app.example.com or http://localhost:5173), or * for any origin."
            )
    return tuple(dict.fromkeys(origins))


def add_cors(app: FastAPI, origins: Sequence[str]) -> None:
    """Let browser pages from `origins` call the API (Starlette's CORSMiddleware); none by default.

    Added last, so it is the outermost layer: it answers preflights (which browsers send without the key) before the
    key check, and its headers reach the 401s too, so a page can read why it was refused."""
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(check_cors_origins(origins)),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )

"""What a shared cluster needs before a request reaches an engine: API keys, per-key
concurrency, and a cap on the request body.

Keys are bearer tokens (``Authorization: Bearer <key>``, as the OpenAI clients send them). They
come from the environment or a mounted file and are never logged: a key is known inside the
application by a short hash of it (:func:`key_id`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class GuardError(Exception):
    """A request refused before any work: ``status`` (401, 413, 429) and a message for the client."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def load_keys(env_name: str | None, path: str | None) -> frozenset[str]:
    """The API keys: the variable ``env_name`` (keys separated by commas or newlines) and the file
    ``path`` (one per line; blank lines and ``#`` comments skipped). Raises OSError for a file
    that cannot be read (a missing Secret should stop the replica, not open it)."""
    keys: set[str] = set()
    if env_name and os.environ.get(env_name):
        keys |= {k.strip() for k in os.environ[env_name].replace("\n", ",").split(",") if k.strip()}
    if path:
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.add(line)
    return frozenset(keys)


def key_id(key: str) -> str:
    """A name for a key that can be logged and used as a metric tag: 12 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyGuard:
    """Checks bearer tokens and counts each key's open requests.

    ``keys`` empty and ``allow_anonymous``: every request is let in as ``anonymous`` (still
    counted against the concurrency limit). ``keys`` empty otherwise: every request is refused.
    """

    def __init__(self, keys: frozenset[str], *, allow_anonymous: bool, max_concurrent: int) -> None:
        self._keys = tuple(keys)
        self.allow_anonymous = allow_anonymous and not keys
        self.max_concurrent = max_concurrent
        self.open: dict[str, int] = {}

    def authenticate(self, authorization: str | None) -> str:
        """The key id for an ``Authorization`` header value (or a bare key). Raises GuardError 401."""
        if self.allow_anonymous:
            return "anonymous"
        token = (authorization or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not token:
            raise GuardError(401, "missing API key: send it as 'Authorization: Bearer <key>'", "missing_api_key")
        # Compare against every key in constant time, so timing tells nothing about near misses.
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(token.encode(), key.encode())
        if not found:
            raise GuardError(401, "invalid API key", "invalid_api_key")
        return key_id(token)

    def acquire(self, who: str) -> None:
        """Count one more open request for ``who``; GuardError 429 when it already has the maximum.
        Per replica of the API deployment (each holds its own counts)."""
        if self.open.get(who, 0) >= self.max_concurrent:
            raise GuardError(
                429,
                f"too many concurrent requests for this API key (limit {self.max_concurrent}); retry when one has finished",
                "rate_limit_exceeded",
            )
        self.open[who] = self.open.get(who, 0) + 1

    def release(self, who: str) -> None:
        left = self.open.get(who, 0) - 1
        if left > 0:
            self.open[who] = left
        else:
            self.open.pop(who, None)


class BodyLimit:
    """ASGI middleware: a request body longer than the application's ``state.max_body_bytes``
    (set by the replica from its config) is answered 413 before it is read further (by its
    Content-Length when given, else as the bytes arrive), so a huge upload costs neither memory
    nor disk. WebSocket traffic is not touched (streams have their own limit)."""

    def __init__(self, app) -> None:
        self.app = app
        self.max_bytes = 0

    def _message(self) -> bytes:
        return (
            b'{"error": {"message": "request body larger than the '
            + f"{self.max_bytes / 1e6:g} MB limit (limits.max_upload_mb)".encode()
            + b'", "type": "invalid_request_error", "param": "file", "code": "upload_too_large"}}'
        )

    async def __call__(self, scope, receive, send):
        limit = getattr(getattr(scope.get("app"), "state", None), "max_body_bytes", None)
        if scope["type"] != "http" or not limit:
            return await self.app(scope, receive, send)
        self.max_bytes = limit
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen = 0
        refused = False

        async def limited_receive():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(send)
        except Exception:
            if not refused:
                raise
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = self._message()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
